"""``gearshift simulate``: replay a trace on the config's placement, in virtual time.

Nothing is started: the plan comes from the configured solver over the config's nodes, and the
simulator routes every request through the same routing profiles as the live gateway.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Annotated

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
from scheduler.config import GearshiftConfig, demo_config, load_config
from scheduler.errors import ConfigError
from scheduler.framework.placement import PlacementPlan, PlacementSolver
from scheduler.inventory import declare_fleet, node_view
from scheduler.placement.planner import plan
from scheduler.plugins import PluginRegistry
from scheduler.simulator.report import SimulationReport
from scheduler.simulator.run import simulate as run_simulation
from scheduler.simulator.trace import TraceRequest, load_trace, synthetic_trace
from scheduler.types import TrafficClass


def offline_plan(config: GearshiftConfig, registry: PluginRegistry) -> PlacementPlan:
    """What the controller would place on the config's nodes, all of them up."""
    views = [
        view
        for declaration in declare_fleet(config)
        if (
            view := node_view(
                declaration.labels,
                {"GPU": declaration.num_gpus, **declaration.resources},
                alive=True,
            )
        )
        is not None
    ]
    return plan(registry.build(config.placement.solver, PlacementSolver), config, views, [])


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
        typer.Option(help="CSV trace: arrived_at,num_prefill_tokens,num_decode_tokens[,class]."),
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="Model the requests ask for (default: the first).")
    ] = None,
    rate: Annotated[
        float, typer.Option(help="Synthetic trace: requests per second.", min=0.001)
    ] = 5.0,
    duration: Annotated[
        float, typer.Option(help="Synthetic trace: seconds of arrivals.", min=1.0)
    ] = 60.0,
    mix: Annotated[
        str, typer.Option(help="Synthetic trace: class shares.")
    ] = "interactive=0.3,standard=0.3,batch=0.4",
    prompt_tokens: Annotated[int, typer.Option(help="Synthetic: mean prompt tokens.", min=1)] = 512,
    output_tokens: Annotated[int, typer.Option(help="Synthetic: mean output tokens.", min=1)] = 128,
    bursty: Annotated[bool, typer.Option(help="Synthetic: bursty arrivals (CV 2).")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the trace generator and routing.")] = 0,
    output: Annotated[
        OutputFormat, typer.Option("--output", "-o", help=OUTPUT_OPTION_HELP)
    ] = OutputFormat.TABLE,
) -> None:
    """Replay a trace (or a synthetic one) on the planned fleet and report SLOs and cost.

    Example: gearshift simulate --rate 20 --duration 300 --mix interactive=0.5,batch=0.5
    """
    try:
        cfg = load_config(config) if config else demo_config()
        if not cfg.models:
            raise ConfigError("the config serves no model")
        name = model or cfg.models[0].name
        if cfg.model(name) is None:
            raise ConfigError(f"model `{name}` is not in the config")
        registry = PluginRegistry.from_entry_points()
        placement = offline_plan(cfg, registry)
        requests: list[TraceRequest]
        if trace is not None:
            requests = load_trace(trace, model=name)
        else:
            requests = synthetic_trace(
                random.Random(seed),
                model=name,
                duration_s=duration,
                rate_per_s=rate,
                mix=parse_mix(mix),
                prompt=(prompt_tokens, prompt_tokens / 2),
                output=(output_tokens, output_tokens / 2),
                bursty=bursty,
            )
        with console_err.status(f"Simulating {len(requests)} requests ..."):
            report = run_simulation(cfg, placement, requests, seed=seed, registry=registry)
    except ConfigError as exc:
        fail(str(exc), code=2)
    document = {
        "model": name,
        "requests": len(requests),
        "plan": [
            {"replica": a.replica_id, "model": a.model, "accelerator": a.accelerator,
             "tensor_parallel": a.tensor_parallel, "price_per_hour": a.price_per_hour}
            for a in placement.assignments
        ],
        **report.to_dict(),
    }  # fmt: skip
    emit(document, output, lambda: _tables(report))


def _tables(report: SimulationReport) -> list[Table]:
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
