"""Interactive latency while batch floods the cheap tier, over minutes rather than CI's 50 s.

    python benchmarks/class_isolation.py [--minutes 10]

The measurement of ``tests/integration/test_class_isolation.py``, run longer: two sim engine
processes (an H100 and an L4 serving qwen2.5-0.5b at time scale 0.25) behind a gateway process
on loopback, one Poisson schedule of interactive chat (20 req/s, 200-token prompts, 16 tokens,
streamed, ``service_tier: priority``) replayed in three phases of ``--minutes`` each:

1. **unloaded**: interactive alone, the baseline;
2. **Gearshift**: while batch (1,500/200 tokens, ``service_tier: flex``) arrives at twice the
   L4's capacity-table rate, with the default config (batch yields the H100 while interactive
   traffic uses it and waits in the gateway's queue while the L4 is full);
3. **class-agnostic**: the same, with batch routed like interactive traffic and never yielding.

Prints interactive TTFT quantiles and their ratio to the unloaded phase (the reliability
matrix's C1 bound: p99 within 1.25x, at least 99.9 % succeeding, batch progressing), where
batch ran, and writes a CDF plot to ``benchmarks/out/class_isolation.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scheduler.config import parse_config  # noqa: E402
from tests.integration.test_class_isolation import (  # noqa: E402
    CONFIG,
    LoadedRun,
    Outcome,
    class_agnostic,
    measure_under_batch_load,
    measure_unloaded,
    quantile,
    sim_engines,
)

OUT = Path(__file__).parent / "out"
QUANTILES = (0.5, 0.9, 0.95, 0.99, 0.999)
BOUND = 1.25


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=2.0, help="length of each phase")
    args = parser.parse_args()
    if not args.minutes > 0:
        parser.error("--minutes must be positive")
    duration_s = args.minutes * 60
    console = Console(width=None if sys.stdout.isatty() else 132)
    config = parse_config(CONFIG)
    with sim_engines(config) as engines:
        console.print(f"phase 1/3: unloaded, {args.minutes:g} min")
        unloaded = measure_unloaded(config, engines, duration_s)
        console.print(f"phase 2/3: Gearshift under batch load, {args.minutes:g} min")
        isolated = measure_under_batch_load(config, engines, duration_s)
        console.print(f"phase 3/3: class-agnostic under batch load, {args.minutes:g} min")
        agnostic = measure_under_batch_load(class_agnostic(config), engines, duration_s)
    phases = {"unloaded": (unloaded, None), "Gearshift": (isolated.interactive, isolated),
              "class-agnostic": (agnostic.interactive, agnostic)}  # fmt: skip
    rows = {name: _row(outcomes, run, unloaded) for name, (outcomes, run) in phases.items()}
    console.print(_table(rows, args.minutes))
    OUT.mkdir(exist_ok=True)
    (OUT / "class_isolation.json").write_text(json.dumps(rows, indent=2))
    plot = OUT / "class_isolation.png"
    _plot(plot, {name: outcomes for name, (outcomes, _) in phases.items()})
    console.print(
        f"wrote {plot} and {OUT / 'class_isolation.json'}\n"
        f"reproduce: python benchmarks/class_isolation.py --minutes {args.minutes:g}"
    )
    gearshift = rows["Gearshift"]
    held = (
        gearshift["ratio"]["p99"] <= BOUND
        and gearshift["success"] >= 0.999
        and gearshift["batch_done"] > 0
    )
    verdict = "held" if held else "MISSED"
    console.print(f"C1 (p99 within {BOUND}x, >= 99.9 % ok, batch > 0): {verdict}")
    return 0 if held else 1


def _row(outcomes: list[Outcome], run: LoadedRun | None, unloaded: list[Outcome]) -> dict[str, Any]:
    ttft = {f"p{q * 100:g}": quantile(outcomes, q) for q in QUANTILES}
    base = {f"p{q * 100:g}": quantile(unloaded, q) for q in QUANTILES}
    row: dict[str, Any] = {
        "requests": len(outcomes),
        "success": sum(o.status == 200 for o in outcomes) / len(outcomes),
        "ttft_s": ttft,
        "ratio": {name: ttft[name] / base[name] for name in ttft},
        "interactive_on": dict(Counter(o.accelerator for o in outcomes if o.status == 200)),
    }
    if run is not None:
        row |= {
            "batch_offered_per_s": run.rate_per_s,
            "batch_done": len(run.batch_done()),
            "batch_503": sum(a.status == 503 for a in run.batch),
            "batch_beside_interactive_on": dict(Counter(run.batch_beside())),
        }
    return row


def _table(rows: dict[str, dict[str, Any]], minutes: float) -> Table:
    table = Table(
        title=f"Interactive TTFT (ms), one schedule replayed, {minutes:g} min per phase; "
        "ratio to unloaded in brackets",
        title_justify="left",
    )
    table.add_column("phase")
    for q in QUANTILES:
        table.add_column(f"p{q * 100:g}", justify="right")
    table.add_column("ok", justify="right")
    table.add_column("batch done (beside interactive)")
    for name, row in rows.items():
        cells = [
            f"{seconds * 1000:.1f}" + ("" if name == "unloaded" else f" ({row['ratio'][k]:.2f}x)")
            for k, seconds in row["ttft_s"].items()
        ]
        batch = "-"
        if "batch_done" in row:
            on = sorted(row["batch_beside_interactive_on"].items())
            beside = ", ".join(f"{card} {count}" for card, count in on)
            batch = f"{row['batch_done']} ({beside or 'none'}), {row['batch_503']} got 503"
        table.add_row(name, *cells, f"{row['success'] * 100:.2f} %", batch)
    return table


def _plot(path: Path, phases: dict[str, list[Outcome]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (body, tail) = plt.subplots(1, 2, figsize=(12, 4.5))
    colors = {"unloaded": "tab:gray", "Gearshift": "tab:green", "class-agnostic": "tab:red"}
    for name, outcomes in phases.items():
        ttft = sorted(o.ttft_s * 1000 for o in outcomes if o.ttft_s is not None)
        share = [(i + 1) / len(ttft) for i in range(len(ttft))]
        body.plot(ttft, share, label=name, color=colors[name])
        tail.plot(ttft, [1 - s + 1 / len(ttft) for s in share], label=name, color=colors[name])
    body.set_xlabel("interactive TTFT (ms)")
    body.set_ylabel("share of requests at or below")
    body.set_title("TTFT distribution")
    tail.set_xlabel("interactive TTFT (ms)")
    tail.set_ylabel("share of requests above (log)")
    tail.set_yscale("log")
    tail.axhline(0.01, color="black", linewidth=0.5, linestyle=":")
    tail.set_title("The tail (dotted: p99)")
    for axes in (body, tail):
        axes.legend()
        axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


if __name__ == "__main__":
    sys.exit(main())
