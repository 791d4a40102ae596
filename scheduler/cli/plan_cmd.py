"""``gearshift plan``: what the configured solver would run for a workload, without starting it.

The nodes are the config's (all up); the demand is the config's ``workload:`` or the one
``--workload`` gives (a YAML list like ``workload:``, or a trace CSV whose per-class rates and
mean sizes are measured). Reports replicas per model × accelerator × TP, $/h, the share of each
class's demand the plan's capacity covers (its predicted SLO attainment), a reason for every
unplaced demand, and how the solver found the plan.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from pydantic import TypeAdapter, ValidationError
from rich.table import Table

from scheduler.cli.output import OUTPUT_OPTION_HELP, OutputFormat, emit, fail, make_table
from scheduler.config import (
    GearshiftConfig,
    WorkloadItem,
    demo_config,
    format_validation_error,
    load_config,
)
from scheduler.errors import ConfigError
from scheduler.framework.placement import NodeView, PlacementPlan, PlacementSolver
from scheduler.inventory import declared_node_views
from scheduler.placement.planner import plan as make_plan
from scheduler.plugins import PluginRegistry
from scheduler.simulator.demand import trace_workload
from scheduler.simulator.trace import load_trace
from scheduler.types import Ownership, TrafficClass


def workload_from_file(
    path: Path, config: GearshiftConfig, model: str | None
) -> list[WorkloadItem]:
    """A ``workload:`` YAML (the list, or a mapping holding it) or a trace CSV's measured rates."""
    if path.suffix.lower() == ".csv":
        return _workload_from_trace(path, config, model)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if isinstance(data, dict) and set(data) == {"workload"}:
        data = data["workload"]
    if not isinstance(data, list):
        raise ConfigError(
            f"{path}: expected a list of workload entries (or `workload:` holding one)"
        )
    try:
        return TypeAdapter(list[WorkloadItem]).validate_python(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, str(path))) from None


def _workload_from_trace(
    path: Path, config: GearshiftConfig, model: str | None
) -> list[WorkloadItem]:
    name = model or (config.models[0].name if config.models else "")
    requests = load_trace(path, model=name)
    if not requests:
        raise ConfigError(f"{path}: the trace has no request")
    return trace_workload(requests)


def with_workload(config: GearshiftConfig, workload: list[WorkloadItem]) -> GearshiftConfig:
    """``config`` with its workload replaced, validated again (models must exist)."""
    data = config.model_dump(mode="json", by_alias=True, exclude_none=True)
    data["workload"] = [item.model_dump(mode="json", by_alias=True) for item in workload]
    try:
        return GearshiftConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, "workload")) from None


def plan(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="Config file; the demo fleet if omitted.")
    ] = None,
    workload: Annotated[
        Path | None,
        typer.Option(
            help="Demand to plan for: a YAML list of {model, class, rate_per_s, prompt_tokens, "
            "output_tokens}, or a trace CSV (rates measured per class). Default: the config's "
            "`workload:`."
        ),
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="With a trace CSV: the model it asks for (default: first).")
    ] = None,
    output: Annotated[
        OutputFormat, typer.Option("--output", "-o", help=OUTPUT_OPTION_HELP)
    ] = OutputFormat.TABLE,
) -> None:
    """Show the placement the configured solver picks for a workload; starts nothing.

    Example: gearshift plan -c examples/mixed-fleet.yaml -o json
    """
    try:
        cfg = load_config(config) if config else demo_config()
        if workload is not None:
            cfg = with_workload(cfg, workload_from_file(workload, cfg, model))
        if model is not None and cfg.model(model) is None:
            raise ConfigError(f"model `{model}` is not in the config")
        nodes = declared_node_views(cfg)
        registry = PluginRegistry.from_entry_points()
        solver = registry.build(cfg.placement.solver, PlacementSolver)
        placement = make_plan(solver, cfg, nodes, [])
    except ConfigError as exc:
        fail(str(exc), code=2)
    document = plan_document(cfg, nodes, placement)
    emit(document, output, lambda: _tables(document))


def plan_document(
    config: GearshiftConfig, nodes: list[NodeView], placement: PlacementPlan
) -> dict[str, Any]:
    """The plan as plain data: replicas grouped, cost, per-class coverage, reasons, notes."""
    by_node = {node.node_id: node for node in nodes}
    groups: Counter[tuple[str, str, str, int]] = Counter()
    prices: dict[tuple[str, str, str, int], float] = {}
    for a in placement.assignments:
        key = (a.model, by_node[a.node_id].group, a.accelerator, a.tensor_parallel)
        groups[key] += 1
        prices[key] = prices.get(key, 0.0) + a.price_per_hour
    spot = {n.group for n in nodes if n.ownership is Ownership.SPOT}
    classes: dict[str, dict[str, float | None]] = {}
    for cls in TrafficClass:
        rows = [c for c in placement.coverage if c.traffic_class is cls]
        demand = sum(c.demand_per_s for c in rows)
        served = sum(min(c.served_per_s, c.demand_per_s) for c in rows)
        classes[cls.value] = {
            "demand_per_s": demand,
            "served_per_s": served,
            "predicted_slo_attainment": served / demand if demand > 0 else None,
        }
    return {
        "solver": config.placement.solver.type,
        "cost_per_hour": placement.cost_per_hour,
        "replicas": [
            {
                "model": model,
                "node_group": group,
                "accelerator": accelerator,
                "tensor_parallel": tp,
                "count": count,
                "cost_per_hour": prices[(model, group, accelerator, tp)],
                "interruptible": group in spot,
            }
            for (model, group, accelerator, tp), count in sorted(groups.items())
        ],
        "classes": classes,
        "coverage": [
            {
                "model": c.model,
                "class": c.traffic_class.value,
                "demand_per_s": c.demand_per_s,
                "served_per_s": c.served_per_s,
                "predicted_slo_attainment": c.share,
            }
            for c in placement.coverage
        ],
        "unplaced": [
            {"subject": r.subject, "reason": r.reason, "code": r.code} for r in placement.unplaced
        ],
        "notes": list(placement.notes),
        "assignments": [
            {
                "replica": a.replica_id,
                "model": a.model,
                "node": a.node_id,
                "accelerator": a.accelerator,
                "tensor_parallel": a.tensor_parallel,
                "price_per_hour": a.price_per_hour,
            }
            for a in placement.assignments
        ],
    }


def _tables(document: dict[str, Any]) -> list[Table]:
    count = sum(row["count"] for row in document["replicas"])
    title = f"Plan ({document['solver']}): {count} replicas, ${document['cost_per_hour']:,.2f}/h"
    tables = [
        make_table(
            title,
            ["model", "node group", "accelerator", "TP", "replicas", "$/h", "spot"],
            [
                (
                    r["model"],
                    r["node_group"],
                    r["accelerator"],
                    r["tensor_parallel"],
                    r["count"],
                    r["cost_per_hour"],
                    "yes" if r["interruptible"] else "",
                )
                for r in document["replicas"]
            ],
        )  # fmt: skip
    ]
    if document["coverage"]:
        tables.append(
            make_table(
                "Demand covered (predicted SLO attainment)",
                ["model", "class", "demand req/s", "covered req/s", "predicted SLO met"],
                [
                    (
                        c["model"],
                        c["class"],
                        c["demand_per_s"],
                        c["served_per_s"],
                        f"{c['predicted_slo_attainment']:.1%}",
                    )
                    for c in document["coverage"]
                ],
            )  # fmt: skip
        )
    if document["unplaced"]:
        tables.append(
            make_table(
                "Not placed",
                ["what", "why"],
                [(u["subject"], u["reason"]) for u in document["unplaced"]],
            )
        )
    if document["notes"]:
        tables.append(make_table("Solver", ["note"], [(note,) for note in document["notes"]]))
    return tables
