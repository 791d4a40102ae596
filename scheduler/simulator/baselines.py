"""What Gearshift saves: the same trace and seed simulated on Gearshift's plan and on baselines.

- ``gearshift``: the config's own solver, fleet and routing.
- ``<TYPE>-only`` (H100-SXM, A100-80GB, L4 and every other GPU type of the config): the fleet
  is that type only: the config's groups of it plus an on-demand group at the catalog price,
  sized generously (doubled while the solver uses all of it and still leaves demand uncovered),
  so a cost solver picks the cheapest count that meets the workload's targets. Model
  accelerator allowlists are lifted: on a one-type fleet every model runs on that type.
- ``class-agnostic`` (Mélange-style): the same fleet, but the planner sees each model's traffic
  as one class with the strictest targets of the classes in its workload, and every class is
  routed least-load (ready and context filters, queue-depth scorer, max-score picker).
- ``round-robin``: Gearshift's plan, routed by ``round-robin-picker`` after the ready and
  context filters.

Plans come from an injected ``Planner`` (the CLI binds the plugin registry and the inventory).
A run whose plan leaves demand unplaced or uncovered is reported infeasible with the solver's
reasons, and still simulated on whatever it placed. Pure: no I/O, seeded routing only.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from nodes.accelerators import AcceleratorKind, accelerator
from scheduler.config import (
    ClassTargets,
    FleetConfig,
    GearshiftConfig,
    NodeGroup,
    PluginSpec,
    ProfileSpec,
    RoutingConfig,
    WeightedRef,
    WorkloadItem,
)
from scheduler.errors import ConfigError
from scheduler.framework.placement import PlacementPlan
from scheduler.plugins import PluginRegistry
from scheduler.simulator.engine import Action
from scheduler.simulator.report import SimulationReport
from scheduler.simulator.run import simulate
from scheduler.simulator.trace import TraceRequest
from scheduler.types import EngineKind, Ownership, TrafficClass

Planner = Callable[[GearshiftConfig], PlacementPlan]
"""Plans a config's whole fleet, every node up (the controller's plan for an empty cluster)."""

Progress = Callable[[str], Action | None]
"""Given a run's name, the ``on_event`` hook to simulate it with (or None)."""

SINGLE_TYPE_ACCELERATORS = ("H100-SXM", "A100-80GB", "L4")
"""Single-type fleets always compared, besides every other GPU type of the config."""
SINGLE_TYPE_NODE_SIZE = 8
"""Accelerators per node of a single-type fleet's on-demand group (room for any TP degree)."""
SINGLE_TYPE_MIN_ACCELERATORS = 8
SINGLE_TYPE_MAX_ACCELERATORS = 2048
"""The on-demand group starts at the config's GPU count (at least the minimum) and doubles
while the solver fills it without covering the demand, up to this many accelerators."""
COVERAGE_TOLERANCE = 1e-6

GEARSHIFT = "gearshift"
CLASS_AGNOSTIC = "class-agnostic"
ROUND_ROBIN = "round-robin"


@dataclass(frozen=True, slots=True)
class RunResult:
    """One simulated run: its plan, what the simulation measured, and why it may fall short."""

    name: str
    plan: PlacementPlan
    report: SimulationReport
    unmet: tuple[str, ...] = ()
    """The solver's reasons for demand it left unplaced or uncovered; empty when feasible."""
    notes: tuple[str, ...] = ()
    """How the run was set up, then the solver's own notes."""

    @property
    def feasible(self) -> bool:
        return not self.unmet

    @property
    def replicas(self) -> dict[str, int]:
        """Replicas per accelerator type."""
        return dict(sorted(Counter(a.accelerator for a in self.plan.assignments).items()))

    @property
    def cost_per_hour(self) -> float:
        return self.plan.cost_per_hour

    @property
    def cost_per_million_tokens(self) -> float | None:
        """Dollars per million output tokens delivered within their class's SLO."""
        return self.report.cost_per_million_slo_tokens

    @property
    def slo_attainment(self) -> dict[TrafficClass, float | None]:
        return {cls: c.slo_attainment for cls, c in self.report.classes.items()}

    def ratio_to(self, reference: RunResult) -> float | None:
        """This run's $ per 1M tokens within SLO ÷ the reference's (None if either has none)."""
        mine, theirs = self.cost_per_million_tokens, reference.cost_per_million_tokens
        if mine is None or theirs is None or theirs <= 0:
            return None
        return mine / theirs

    def to_dict(self, reference: RunResult | None = None) -> dict[str, Any]:
        document: dict[str, Any] = {
            "name": self.name,
            "feasible": self.feasible,
            "unmet": list(self.unmet),
            "notes": list(self.notes),
            "plan": self.replicas,
            "cost_per_hour": self.cost_per_hour,
            "cost_per_million_tokens": self.cost_per_million_tokens,
            "slo_attainment": {cls.value: value for cls, value in self.slo_attainment.items()},
        }
        if reference is not None:
            document["ratio_vs_gearshift"] = self.ratio_to(reference)
        return document


# ---------------------------------------------------------------------------------- the runs


def run_gearshift(
    config: GearshiftConfig,
    trace: Sequence[TraceRequest],
    planner: Planner,
    registry: PluginRegistry,
    *,
    seed: int = 0,
    progress: Progress | None = None,
) -> RunResult:
    """The config as it is: its solver's plan, its routing."""
    plan = planner(config)
    return _run(GEARSHIFT, config, plan, trace, registry, seed, progress, ())


def run_baselines(
    config: GearshiftConfig,
    trace: Sequence[TraceRequest],
    planner: Planner,
    registry: PluginRegistry,
    gearshift_plan: PlacementPlan,
    *,
    seed: int = 0,
    progress: Progress | None = None,
) -> list[RunResult]:
    """Every baseline, in a fixed order: single-type fleets, class-agnostic, round-robin.

    ``config`` should carry the demand (``workload``) the planner sizes for; ``gearshift_plan``
    is Gearshift's plan of it, which the round-robin baseline reuses.
    """
    results = []
    for name in single_type_accelerators(config):
        run_config, plan, notes = single_type_plan(config, name, planner)
        results.append(
            _run(f"{name}-only", run_config, plan, trace, registry, seed, progress, notes)
        )
    agnostic_plan = planner(class_agnostic_planning_config(config))
    agnostic = config.model_copy(update={"routing": least_load_routing()})
    results.append(
        _run(
            CLASS_AGNOSTIC,
            agnostic,
            agnostic_plan,
            trace,
            registry,
            seed,
            progress,
            (
                "planned as one class per model with the strictest targets of its workload",
                "routed least-load (queue depth) for every class; engine priorities kept",
            ),
        )
    )
    round_robin = config.model_copy(update={"routing": round_robin_routing()})
    results.append(
        _run(
            ROUND_ROBIN,
            round_robin,
            gearshift_plan,
            trace,
            registry,
            seed,
            progress,
            ("Gearshift's plan, routed round robin after the ready and context filters",),
        )
    )
    return results


def _run(
    name: str,
    config: GearshiftConfig,
    plan: PlacementPlan,
    trace: Sequence[TraceRequest],
    registry: PluginRegistry,
    seed: int,
    progress: Progress | None,
    notes: tuple[str, ...],
) -> RunResult:
    hook = progress(name) if progress is not None else None
    report = simulate(config, plan, trace, seed=seed, registry=registry, on_event=hook)
    return RunResult(name, plan, report, unmet_demand(plan), (*notes, *plan.notes))


def unmet_demand(plan: PlacementPlan) -> tuple[str, ...]:
    """The plan's unplaced demand and uncovered class demand, one sentence each."""
    reasons = [f"{r.subject}: {r.reason}" for r in plan.unplaced]
    for coverage in plan.coverage:
        if coverage.share < 1.0 - COVERAGE_TOLERANCE:
            reasons.append(
                f"{coverage.model}/{coverage.traffic_class.value}: capacity within targets for "
                f"{coverage.served_per_s:.3g} of {coverage.demand_per_s:.3g} req/s"
            )
    return tuple(reasons)


# ------------------------------------------------------------------------ single-type fleets


def single_type_accelerators(config: GearshiftConfig) -> list[str]:
    """The fixed list, then every other GPU type of the config, in fleet order."""
    names = list(SINGLE_TYPE_ACCELERATORS)
    for group in config.fleet.node_groups:
        if not group.is_cpu and group.accelerator not in names:
            names.append(group.accelerator)
    return names


def single_type_config(config: GearshiftConfig, name: str, accelerators: int) -> GearshiftConfig:
    """``config`` on a fleet of ``name`` only: its groups of that type, plus an on-demand group
    of at least ``accelerators`` at the catalog price; model allowlists lifted."""
    spec = accelerator(name)
    if spec.kind is AcceleratorKind.CPU:
        raise ConfigError(f"a single-type fleet is of one GPU type, not {spec.name}")
    kept = [group for group in config.fleet.node_groups if group.accelerator == spec.name]
    vllm = any(model.engine is EngineKind.VLLM for model in config.models)
    extra = NodeGroup(
        name=_group_name(spec.name, {group.name for group in kept}),
        accelerator=spec.name,
        accelerators_per_node=SINGLE_TYPE_NODE_SIZE,
        nodes=math.ceil(accelerators / SINGLE_TYPE_NODE_SIZE),
        ownership=Ownership.ON_DEMAND,
        simulated=not vllm,
    )
    models = [model.model_copy(update={"accelerators": []}) for model in config.models]
    fleet = FleetConfig(node_groups=[*kept, extra])
    return config.model_copy(update={"fleet": fleet, "models": models})


def single_type_plan(
    config: GearshiftConfig, name: str, planner: Planner
) -> tuple[GearshiftConfig, PlacementPlan, tuple[str, ...]]:
    """Plan ``config`` on a single-type fleet of ``name``, growing its on-demand group until
    the demand is covered, the solver leaves some of it unused, or the cap is reached."""
    gpus = sum(
        group.accelerators_per_node * group.nodes
        for group in config.fleet.node_groups
        if not group.is_cpu
    )
    offered = min(SINGLE_TYPE_MAX_ACCELERATORS, max(SINGLE_TYPE_MIN_ACCELERATORS, gpus))
    while True:
        single = single_type_config(config, name, offered)
        extra = single.fleet.node_groups[-1]
        plan = planner(single)
        extra_nodes = set(extra.node_ids())
        used = sum(a.tensor_parallel for a in plan.assignments if a.node_id in extra_nodes)
        size = extra.nodes * extra.accelerators_per_node
        if not unmet_demand(plan) or used < size or size >= SINGLE_TYPE_MAX_ACCELERATORS:
            break
        offered = min(SINGLE_TYPE_MAX_ACCELERATORS, 2 * size)
    price = extra.node_price_per_hour() / extra.accelerators_per_node
    kept = len(single.fleet.node_groups) - 1
    notes = (
        f"{name} only: {size} on-demand accelerators offered at ${price:.2f}/h each"
        + (f" besides the config's {kept} group(s) of it" if kept else "")
        + f"; the plan uses {used}",
        "model accelerator allowlists lifted",
    )
    return single, plan, notes


def _group_name(accelerator_name: str, taken: set[str]) -> str:
    base = re.sub(r"[^a-z0-9.\-]+", "-", accelerator_name.lower()).strip("-.")[:28]
    name, index = f"{base}-on-demand", 1
    while name in taken:
        index += 1
        name = f"{base}-on-demand-{index}"
    return name


# ---------------------------------------------------------------------- class-agnostic (Mélange)


def class_agnostic_planning_config(config: GearshiftConfig) -> GearshiftConfig:
    """What a class-agnostic allocator plans for: each model's workload merged into one entry
    (summed rate, rate-weighted mean sizes) of the strictest class it has, whose targets become
    the strictest of every class in the workload."""
    if not config.workload:
        return config
    order = list(TrafficClass)
    present = sorted({item.traffic_class for item in config.workload}, key=order.index)
    strictest = present[0]
    classes = config.traffic_classes
    targets = [classes.targets(cls) for cls in present]
    merged_targets = ClassTargets(
        ttft_s=_strictest([t.ttft_s for t in targets]),
        tpot_s=_strictest([t.tpot_s for t in targets]),
        deadline_s=_strictest([t.deadline_s for t in targets]),
        engine_priority=classes.targets(strictest).engine_priority,
    )
    by_model: dict[str, list[WorkloadItem]] = {}
    for item in config.workload:
        by_model.setdefault(item.model, []).append(item)
    workload = [_merged(model, strictest, items) for model, items in sorted(by_model.items())]
    traffic_classes = classes.model_copy(update={strictest.value: merged_targets})
    return config.model_copy(update={"workload": workload, "traffic_classes": traffic_classes})


def _strictest(values: Sequence[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return min(present) if present else None


def _merged(model: str, traffic_class: TrafficClass, items: Sequence[WorkloadItem]) -> WorkloadItem:
    rate = sum(item.rate_per_s for item in items)
    weights = [item.rate_per_s if rate > 0 else 1.0 for item in items]

    def mean(sizes: Sequence[int]) -> int:
        weighted = sum(w * size for w, size in zip(weights, sizes, strict=True))
        return max(1, round(weighted / sum(weights)))

    return WorkloadItem(
        model=model,
        traffic_class=traffic_class,
        rate_per_s=rate,
        prompt_tokens=mean([item.prompt_tokens for item in items]),
        output_tokens=mean([item.output_tokens for item in items]),
    )


# ---------------------------------------------------------------------------------- routing


def least_load_routing() -> RoutingConfig:
    """Every class: ready and context filters → queue-depth scorer → max-score picker."""
    return _uniform_routing(
        [PluginSpec(name="queue", type="queue-depth-scorer")],
        PluginSpec(name="least-load", type="max-score-picker"),
    )


def round_robin_routing() -> RoutingConfig:
    """Every class: ready and context filters → round-robin picker (no scorer)."""
    return _uniform_routing([], PluginSpec(name="round-robin", type="round-robin-picker"))


def _uniform_routing(scorers: list[PluginSpec], picker: PluginSpec) -> RoutingConfig:
    filters = [
        PluginSpec(name="ready", type="ready-filter"),
        PluginSpec(name="context", type="context-fit-filter"),
    ]
    profile = ProfileSpec(
        filters=[spec.name for spec in filters],
        scorers=[WeightedRef(ref=spec.name) for spec in scorers],
        picker=picker.name,
    )
    return RoutingConfig(
        plugins=[*filters, *scorers, picker], profiles={cls: profile for cls in TrafficClass}
    )
