"""PNG charts of simulated runs (``gearshift simulate --plot``, the benchmarks).

Three panels: $ per 1M output tokens within SLO per run, SLO attainment per class and run, and
TTFT p50/p99 per class and run. matplotlib is imported inside ``write_runs_plot`` (Agg backend),
so the CLI starts without it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from scheduler.simulator.baselines import RunResult
from scheduler.types import TrafficClass

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def write_runs_plot(path: Path, runs: Sequence[RunResult], *, title: str = "") -> None:
    """Draw ``runs`` (the first is the reference, e.g. Gearshift) into the PNG ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [run.name for run in runs]
    classes = list(TrafficClass)
    width = max(10.0, 1.3 * len(runs) + 4.0)
    figure, (cost_ax, slo_ax, ttft_ax) = plt.subplots(3, 1, figsize=(width, 11.0))
    try:
        positions = list(range(len(runs)))
        costs = [run.cost_per_million_tokens for run in runs]
        heights = [cost or 0.0 for cost in costs]
        colours = ["tab:green" if i == 0 else "tab:gray" for i in positions]
        bars = cost_ax.bar(positions, heights, color=colours)
        for bar, run, cost in zip(bars, runs, costs, strict=True):
            label = "no token within SLO" if cost is None else f"${cost:,.2f}"
            if not run.feasible:
                label += "\n(infeasible)"
                bar.set_hatch("//")
            cost_ax.annotate(
                label,
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=8,
            )
        cost_ax.set_xticks(positions, names, rotation=15, ha="right")
        cost_ax.set_ylabel("$ per 1M tokens within SLO")
        cost_ax.set_title(title or "Cost of output tokens delivered within their SLO")

        group = 0.8 / len(classes)
        for index, cls in enumerate(classes):
            offsets = [p - 0.4 + group * (index + 0.5) for p in positions]
            values = [run.slo_attainment.get(cls) for run in runs]
            slo_ax.bar(offsets, [100.0 * (v or 0.0) for v in values], group, label=cls.value)
        slo_ax.set_xticks(positions, names, rotation=15, ha="right")
        slo_ax.set_ylim(0, 105)
        slo_ax.set_ylabel("SLO attainment, %")
        slo_ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)

        group = 0.8 / len(runs)
        class_positions = list(range(len(classes)))
        for index, run in enumerate(runs):
            offsets = [p - 0.4 + group * (index + 0.5) for p in class_positions]
            reports = [run.report.classes.get(cls) for cls in classes]
            p99 = [_ms(r.ttft_p99_s if r else None) for r in reports]
            p50 = [_ms(r.ttft_p50_s if r else None) for r in reports]
            bar_set = ttft_ax.bar(offsets, p99, group, alpha=0.45, label=f"{run.name} p99")
            colour = bar_set.patches[0].get_facecolor() if bar_set.patches else None
            ttft_ax.bar(offsets, p50, group * 0.5, color=colour, alpha=1.0)
        ttft_ax.set_xticks(class_positions, [cls.value for cls in classes])
        ttft_ax.set_yscale("log")
        ttft_ax.set_ylabel("TTFT ms (wide: p99, narrow: p50)")
        ttft_ax.legend(
            fontsize=7,
            ncol=max(1, min(4, len(runs))),
            loc="upper center",
            bbox_to_anchor=(0.5, -0.08),
        )
        figure.tight_layout()
        figure.savefig(path, format="png", dpi=110, bbox_inches="tight")
    finally:
        plt.close(figure)


def _ms(seconds: float | None) -> float:
    """Milliseconds, or NaN (no bar) when there is no value."""
    return math.nan if seconds is None else 1000.0 * seconds
