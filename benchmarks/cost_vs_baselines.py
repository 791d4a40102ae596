"""What Gearshift's placement and routing cost per token within SLO, against baselines that
replay the same trace with the same seed in the same run.

    python benchmarks/cost_vs_baselines.py [--config examples/mixed-fleet.yaml]
        [--duration 3600] [--scale 4] [--seed 0]

Workload (``public_traces.mixed_trace``): Splitwise conversation arrivals as interactive chat
and arXiv summarization lengths as batch work (Poisson, 2 req/s per copy) on llama-3.1-8b,
Splitwise code arrivals as standard traffic on qwen2.5-0.5b; ``--scale`` overlays that many
copies of each. The fleet and the solver are the config's (``examples/mixed-fleet.yaml``: H100,
A100, L40S, L4 and CPU groups, ``cost-milp-solver``); its ``workload`` declares the traces'
rates at scale 4 and is scaled by ``--scale / 4``. The runs (``scheduler.simulator.baselines``):
Gearshift; single-type fleets (each GPU type, sized by the same solver); a class-agnostic
(Mélange-style) allocation with least-load routing; Gearshift's plan routed round robin.

Reports, per run, $/h, $ per 1M output tokens delivered within their class's SLO, per-class
SLO attainment and the ratio to Gearshift; then Gearshift's saving against the cheapest feasible
single-type fleet (target >= 50%) and the class-agnostic allocation (target >= 20%), and its
interactive SLO attainment (target >= 99%). Writes ``benchmarks/out/cost_vs_baselines.png``
and ``.json``. About two minutes with the defaults on one core.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from public_traces import mixed_trace
from rich.console import Console
from rich.table import Table

from scheduler.cli.plots import write_runs_plot
from scheduler.cli.sim_progress import run_progress
from scheduler.cli.simulate_cmd import offline_plan
from scheduler.config import GearshiftConfig, load_config
from scheduler.framework.placement import PlacementPlan, PlacementSolver
from scheduler.plugins import PluginRegistry
from scheduler.simulator.baselines import (
    CLASS_AGNOSTIC,
    GEARSHIFT,
    RunResult,
    run_baselines,
    run_gearshift,
)
from scheduler.types import TrafficClass

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "out"
CONFIG = ROOT / "examples" / "mixed-fleet.yaml"
WORKLOAD_SCALE = 4
"""The scale the config's ``workload`` is written for."""
TARGET_VS_SINGLE_TYPE = 0.50
TARGET_VS_CLASS_AGNOSTIC = 0.20
TARGET_INTERACTIVE_SLO = 0.99


def scaled(config: GearshiftConfig, factor: float) -> GearshiftConfig:
    workload = [
        item.model_copy(update={"rate_per_s": item.rate_per_s * factor}) for item in config.workload
    ]
    return config.model_copy(update={"workload": workload})


def saving(gearshift: RunResult, baseline: RunResult) -> float | None:
    """1 - Gearshift's $/1M SLO tokens ÷ the baseline's (None when either has none)."""
    ratio = gearshift.ratio_to(baseline)
    return None if ratio is None else 1.0 - ratio


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--duration", type=float, default=3600.0, help="seconds of arrivals")
    parser.add_argument("--scale", type=int, default=WORKLOAD_SCALE, help="copies of each trace")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    config_name = (
        args.config.resolve().relative_to(ROOT) if args.config.is_absolute() else args.config
    )
    command = (
        f"python benchmarks/cost_vs_baselines.py --config {config_name} "
        f"--duration {args.duration:g} --scale {args.scale} --seed {args.seed}"
    )
    console = Console(width=None if sys.stdout.isatty() else 132)
    registry = PluginRegistry.from_entry_points()
    config = scaled(load_config(args.config), args.scale / WORKLOAD_SCALE)
    solver = config.placement.solver.type
    registry.build(config.placement.solver, PlacementSolver)  # fails early if not registered
    trace = mixed_trace(duration_s=args.duration, scale=args.scale, seed=args.seed)

    def planner(variant: GearshiftConfig) -> PlacementPlan:
        return offline_plan(variant, registry)

    started = time.perf_counter()
    with run_progress(trace, console) as progress:
        gearshift = run_gearshift(
            config, trace, planner, registry, seed=args.seed, progress=progress
        )
        baselines = run_baselines(
            config, trace, planner, registry, gearshift.plan, seed=args.seed, progress=progress
        )
    wall = time.perf_counter() - started
    runs = [gearshift, *baselines]

    classes = {cls: sum(r.traffic_class is cls for r in trace) for cls in TrafficClass}
    console.print(
        f"{len(trace):,} requests over {args.duration:,.0f} s "
        f"({', '.join(f'{cls.value} {n:,}' for cls, n in classes.items())}); "
        f"solver {solver}; planner demand: the config's workload x {args.scale / WORKLOAD_SCALE:g}"
    )
    console.print(_runs_table(runs))
    for run in runs:
        for note in run.unmet:
            console.print(f"  {run.name}: unmet: {note}", markup=False)
    console.print(_targets_table(gearshift, baselines))

    OUT.mkdir(exist_ok=True)
    png = OUT / "cost_vs_baselines.png"
    write_runs_plot(png, runs, title=f"{len(trace):,} requests, {solver}, scale {args.scale}")
    raw = OUT / "cost_vs_baselines.json"
    raw.write_text(
        json.dumps(
            {
                "command": command,
                "solver": solver,
                "requests": len(trace),
                "runs": [run.to_dict(gearshift) for run in runs],
            },
            indent=2,
        )
    )
    console.print(f"{wall:.0f} s; wrote {png} and {raw}\nreproduce: {command}", markup=False)
    return 0


def _runs_table(runs: list[RunResult]) -> Table:
    gearshift = runs[0]
    table = Table(
        title="$ per 1M output tokens within SLO, same trace and seed", title_justify="left"
    )
    for column in ("run", "replicas", "$/h", "$/1M SLO tok", "interactive", "standard",
                   "batch", "÷ gearshift"):  # fmt: skip
        table.add_column(column, justify="left" if column in ("run", "replicas") else "right")
    for run in runs:
        cost = run.cost_per_million_tokens
        ratio = run.ratio_to(gearshift)
        table.add_row(
            run.name + ("" if run.feasible else " (infeasible)"),
            " ".join(f"{name}×{count}" for name, count in run.replicas.items()) or "-",
            f"{run.cost_per_hour:,.2f}",
            "-" if cost is None else f"{cost:,.4f}",
            *(
                "-" if (value := run.slo_attainment.get(cls)) is None else f"{value:.2%}"
                for cls in TrafficClass
            ),
            "-" if ratio is None else f"{ratio:.2f}",
        )
    return table


def _targets_table(gearshift: RunResult, baselines: list[RunResult]) -> Table:
    single = [
        run
        for run in baselines
        if run.name.endswith("-only") and run.feasible and run.cost_per_million_tokens
    ]
    cheapest = min(single, key=lambda run: run.cost_per_million_tokens or 0.0, default=None)
    agnostic = next((run for run in baselines if run.name == CLASS_AGNOSTIC), None)
    interactive = gearshift.slo_attainment.get(TrafficClass.INTERACTIVE)
    table = Table(title=f"Targets ({GEARSHIFT} against ...)", title_justify="left")
    for column in ("measure", "measured", "target", "met"):
        table.add_column(column, justify="left" if column == "measure" else "right")

    def row(measure: str, value: float | None, target: float) -> None:
        met = value is not None and value >= target
        shown = "-" if value is None else f"{value:.2%}"
        table.add_row(measure, shown, f">= {target:.0%}", "yes" if met else "no")

    if cheapest is not None:
        row(
            f"saving vs the cheapest single-type fleet ({cheapest.name})",
            saving(gearshift, cheapest),
            TARGET_VS_SINGLE_TYPE,
        )
    if agnostic is not None:
        row(
            "saving vs the class-agnostic allocation",
            saving(gearshift, agnostic),
            TARGET_VS_CLASS_AGNOSTIC,
        )
    row("interactive SLO attainment", interactive, TARGET_INTERACTIVE_SLO)
    return table


if __name__ == "__main__":
    sys.exit(main())
