"""``gearshift simulate``: replay a trace on the config's placement, in virtual time.

Nothing is started: the plan comes from the configured solver over the config's nodes, sized
for the config's ``workload`` (or, without one, for the trace's own demand), and the simulator
routes every request through the same routing profiles as the live gateway. ``--baselines``
replays the same trace and seed on single-type fleets, a class-agnostic allocation and
round-robin routing (``scheduler.simulator.baselines``); ``--plot`` draws the runs.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from scheduler.cli.output import (
    OUTPUT_OPTION_HELP,
    OutputFormat,
    console_err,
    emit,
    fail,
    make_table,
)
from scheduler.cli.plots import write_runs_plot
from scheduler.cli.sim_progress import run_progress
from scheduler.config import GearshiftConfig, demo_config, load_config
from scheduler.errors import ConfigError
from scheduler.framework.placement import PlacementPlan, PlacementSolver
from scheduler.inventory import declared_node_views
from scheduler.placement.planner import plan
from scheduler.plugins import PluginRegistry
from scheduler.simulator.baselines import (
    RunResult,
    run_baselines,
    run_gearshift,
)
from scheduler.simulator.demand import DemandSource, PlannedDemand, planned_demand
from scheduler.simulator.report import SimulationReport
from scheduler.simulator.trace import TraceRequest, first_seconds, load_trace, synthetic_trace
from scheduler.types import TrafficClass

DEFAULT_SYNTHETIC_DURATION_S = 60.0


def offline_plan(config: GearshiftConfig, registry: PluginRegistry) -> PlacementPlan:
    """What the controller would place on the config's nodes, all of them up."""
    solver = registry.build(config.placement.solver, PlacementSolver)
    return plan(solver, config, declared_node_views(config), [])


def parse_mix(text: str) -> dict[TrafficClass, float]:
    """``interactive=0.3,batch=0.7`` → shares per class."""
    mix: dict[TrafficClass, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, share = item.partition("=")
        try:
            mix[TrafficClass(name.strip())] = float(share)
        except ValueError:
            raise ConfigError(
                f"bad --mix item `{item}`: expected CLASS=SHARE with CLASS one of "
                f"{', '.join(c.value for c in TrafficClass)}"
            ) from None
        if not sep:
            raise ConfigError(f"bad --mix item `{item}`: expected CLASS=SHARE")
    if not mix or any(share < 0 for share in mix.values()) or sum(mix.values()) <= 0:
        raise ConfigError("--mix needs at least one class with a positive share")
    return mix


def simulate(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="Config file; the demo fleet if omitted.")
    ] = None,
    trace: Annotated[
        Path | None,
        typer.Option(
            help="CSV trace (.csv or .csv.gz): arrived_at,num_prefill_tokens,num_decode_tokens"
            "[,traffic_class]; rows without a class draw one from --mix."
        ),
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="Model the requests ask for (default: the first).")
    ] = None,
    rate: Annotated[
        float, typer.Option(help="Synthetic trace: requests per second.", min=0.001)
    ] = 5.0,
    duration: Annotated[
        float | None,
        typer.Option(
            help="Seconds of arrivals: the synthetic trace's length (default 60), or the first "
            "seconds of a CSV trace (default: all of it).",
            min=0.001,
        ),
    ] = None,
    mix: Annotated[
        str, typer.Option(help="Class shares: of a synthetic trace, or of CSV rows without one.")
    ] = "interactive=0.3,standard=0.3,batch=0.4",
    prompt_tokens: Annotated[int, typer.Option(help="Synthetic: mean prompt tokens.", min=1)] = 512,
    output_tokens: Annotated[int, typer.Option(help="Synthetic: mean output tokens.", min=1)] = 128,
    bursty: Annotated[bool, typer.Option(help="Synthetic: bursty arrivals (CV 2).")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the trace generator and routing.")] = 0,
    baselines: Annotated[
        bool,
        typer.Option(
            "--baselines",
            help="Also run single-type fleets, a class-agnostic allocation and round-robin "
            "routing on the same trace and seed, and compare their cost.",
        ),
    ] = False,
    plot: Annotated[
        Path | None,
        typer.Option(help="Write a PNG chart of cost, SLO attainment and TTFT per run here."),
    ] = None,
    output: Annotated[
        OutputFormat, typer.Option("--output", "-o", help=OUTPUT_OPTION_HELP)
    ] = OutputFormat.TABLE,
) -> None:
    """Replay a trace (or a synthetic one) on the planned fleet and report SLOs and cost.

    Example: gearshift simulate --rate 20 --duration 300 --mix interactive=0.5,batch=0.5
    --baselines --plot runs.png
    """
    try:
        if plot is not None:
            _check_plot_path(plot)
        cfg = load_config(config) if config else demo_config()
        if not cfg.models:
            raise ConfigError("the config serves no model")
        name = model or cfg.models[0].name
        if cfg.model(name) is None:
            raise ConfigError(f"model `{name}` is not in the config")
        shares = parse_mix(mix)
        requests, span = _requests(trace, name, shares, duration, rate, prompt_tokens,
                                   output_tokens, bursty, seed)  # fmt: skip
        demand = planned_demand(cfg, requests, span_s=span)
        registry = PluginRegistry.from_entry_points()

        def planner(variant: GearshiftConfig) -> PlacementPlan:
            return offline_plan(variant, registry)

        with run_progress(requests, console_err, enabled=console_err.is_terminal) as progress:
            gearshift = run_gearshift(
                demand.config, requests, planner, registry, seed=seed, progress=progress
            )
            others = (
                run_baselines(
                    demand.config,
                    requests,
                    planner,
                    registry,
                    gearshift.plan,
                    seed=seed,
                    progress=progress,
                )
                if baselines
                else []
            )
    except ConfigError as exc:
        fail(str(exc), code=2)
    if plot is not None:
        try:
            write_runs_plot(plot, [gearshift, *others], title=f"{len(requests):,} requests")
        except OSError as exc:
            fail(f"cannot write {plot}: {exc.strerror or exc}", code=1)
    document = _document(name, requests, demand, cfg, gearshift, others if baselines else None)
    emit(document, output, lambda: _tables(demand, gearshift, others))
    if plot is not None and output is OutputFormat.TABLE:
        console_err.print(f"Wrote {plot}", soft_wrap=True, markup=False)


def _check_plot_path(path: Path) -> None:
    if path.suffix.lower() != ".png":
        raise ConfigError(f"--plot writes a PNG: give a file name ending in .png, not `{path}`")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise ConfigError(f"--plot: directory {parent} does not exist")


def _requests(
    trace: Path | None,
    model: str,
    mix: dict[TrafficClass, float],
    duration: float | None,
    rate: float,
    prompt_tokens: int,
    output_tokens: int,
    bursty: bool,
    seed: int,
) -> tuple[list[TraceRequest], float | None]:
    """The requests to replay, and the span their demand is measured over (None: the
    trace's own first-to-last arrival)."""
    if trace is not None:
        requests = load_trace(trace, model=model, mix=mix, rng=random.Random(seed))
        if duration is not None:
            requests = first_seconds(requests, duration)
        if not requests:
            raise ConfigError(f"trace {trace} has no request to replay")
        return requests, None
    length = DEFAULT_SYNTHETIC_DURATION_S if duration is None else duration
    requests = synthetic_trace(
        random.Random(seed),
        model=model,
        duration_s=length,
        rate_per_s=rate,
        mix=mix,
        prompt=(prompt_tokens, prompt_tokens / 2),
        output=(output_tokens, output_tokens / 2),
        bursty=bursty,
    )
    return requests, length


def _document(
    model: str,
    requests: Sequence[TraceRequest],
    demand: PlannedDemand,
    config: GearshiftConfig,
    gearshift: RunResult,
    baselines: Sequence[RunResult] | None,
) -> dict[str, Any]:
    placement = gearshift.plan
    document: dict[str, Any] = {
        "model": model,
        "requests": len(requests),
        "solver": config.placement.solver.type,
        "demand": {
            "source": demand.source.value,
            "workload": [item.model_dump(mode="json", by_alias=True) for item in demand.workload],
        },
        "plan": [
            {"replica": a.replica_id, "model": a.model, "accelerator": a.accelerator,
             "tensor_parallel": a.tensor_parallel, "price_per_hour": a.price_per_hour}
            for a in placement.assignments
        ],
        "plan_notes": list(placement.notes),
        "unmet": list(gearshift.unmet),
        **gearshift.report.to_dict(),
        "cost_per_hour": gearshift.cost_per_hour,
        "cost_per_million_tokens": gearshift.cost_per_million_tokens,
    }  # fmt: skip
    if baselines is not None:
        document["baselines"] = [run.to_dict(gearshift) for run in baselines]
    return document


def _tables(
    demand: PlannedDemand, gearshift: RunResult, baselines: Sequence[RunResult]
) -> list[Table]:
    tables = [_demand_table(demand), *_report_tables(gearshift.report)]
    if baselines:
        tables.append(_comparison_table([gearshift, *baselines]))
    reasons = [(run.name, reason) for run in [gearshift, *baselines] for reason in run.unmet]
    if reasons:
        tables.append(make_table("Demand the plan does not meet", ["run", "reason"], reasons))
    return tables


def _demand_table(demand: PlannedDemand) -> Table:
    source = (
        "the config's workload"
        if demand.source is DemandSource.CONFIG
        else "derived from the trace (the config has no workload)"
    )
    return make_table(
        f"Demand the planner sized the fleet for: {source}",
        ["model", "class", "req/s", "prompt tokens", "output tokens"],
        [
            (item.model, item.traffic_class.value, round(item.rate_per_s, 3), item.prompt_tokens,
             item.output_tokens)
            for item in demand.workload
        ],
    )  # fmt: skip


def _comparison_table(runs: Sequence[RunResult]) -> Table:
    reference = runs[0]

    def money(value: float | None) -> str:
        return "-" if value is None else f"${value:,.3f}"

    def share(value: float | None) -> str:
        return "-" if value is None else f"{value:.1%}"

    rows = []
    for run in runs:
        ratio = run.ratio_to(reference)
        rows.append(
            (
                run.name + ("" if run.feasible else " (infeasible)"),
                " ".join(f"{accel}×{count}" for accel, count in run.replicas.items()) or "-",
                f"${run.cost_per_hour:,.2f}",
                money(run.cost_per_million_tokens),
                *(share(run.slo_attainment.get(cls)) for cls in TrafficClass),
                "-" if ratio is None else f"{ratio:.2f}×",
            )
        )
    return make_table(
        "Gearshift against baselines (same trace and seed): $ per 1M output tokens within SLO",
        ["run", "replicas", "$/h", "$/1M SLO tokens",
         *(f"SLO {cls.value}" for cls in TrafficClass), "vs gearshift"],
        rows,
    )  # fmt: skip


def _report_tables(report: SimulationReport) -> list[Table]:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value * 1000:,.1f}"

    classes = make_table(
        f"Simulated {report.simulated_s:,.0f} s: ${report.cost_per_hour:,.2f}/h, "
        + (
            f"${report.cost_per_million_slo_tokens:,.2f} per 1M tokens within SLO"
            if report.cost_per_million_slo_tokens is not None
            else "no token within SLO"
        ),
        ["class", "requests", "done", "rejected", "TTFT p50 ms", "TTFT p99 ms", "TPOT p50 ms",
         "TPOT p99 ms", "SLO met"],
        [
            (cls.value, c.requests, c.completed, c.rejected, ms(c.ttft_p50_s), ms(c.ttft_p99_s),
             ms(c.tpot_p50_s), ms(c.tpot_p99_s),
             "-" if c.slo_attainment is None else f"{c.slo_attainment:.1%}")
            for cls, c in report.classes.items()
        ],
    )  # fmt: skip
    utilization = make_table(
        "Utilization",
        ["accelerator", "busy"],
        [(name, f"{share:.1%}") for name, share in sorted(report.utilization.items())],
    )
    return [classes, utilization]
