"""Build the placement problem from config, inventory, demand and what runs, and ask the solver.

Demand per (model, class) is the config's ``workload`` merged with what the gateways observe:
the larger rate wins, with its own request sizes (the workload's on a tie), so observed traffic
can only raise the floor the operator set. Each shape carries its price, whether it may be
interrupted, and its capacity per class at the size of that class's demand (read off the
capacity table).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from scheduler.config import GearshiftConfig
from scheduler.framework.placement import (
    ClassDemand,
    ModelDemand,
    NodeView,
    PlacementPlan,
    PlacementProblem,
    PlacementSolver,
    ReplicaAssignment,
)
from scheduler.placement.capacity import demand_sizes, with_capacity, workload_demand
from scheduler.placement.shapes import replica_shapes
from scheduler.types import TrafficClass

ObservedDemand = Mapping[str, Sequence[ClassDemand]]
"""Observed demand per model name (e.g. ``DemandTracker.snapshot``)."""


def merged_demand(
    config: GearshiftConfig, observed: ObservedDemand | None = None
) -> dict[str, tuple[ClassDemand, ...]]:
    """Per configured model, one demand per class in either source, in class order: the larger
    rate with that source's sizes. Observed demand for models the config lacks is ignored."""
    merged: dict[str, dict[TrafficClass, ClassDemand]] = {
        model: {demand.traffic_class: demand for demand in demands}
        for model, demands in workload_demand(config).items()
    }
    for model, demands in (observed or {}).items():
        if config.model(model) is None:
            continue
        classes = merged.setdefault(model, {})
        for demand in demands:
            floor = classes.get(demand.traffic_class)
            if floor is None or demand.rate_per_s > floor.rate_per_s:
                classes[demand.traffic_class] = demand
    order = list(TrafficClass)
    return {
        model: tuple(sorted(classes.values(), key=lambda d: order.index(d.traffic_class)))
        for model, classes in merged.items()
    }


def build_problem(
    config: GearshiftConfig,
    nodes: Sequence[NodeView],
    current: Sequence[ReplicaAssignment],
    observed: ObservedDemand | None = None,
) -> PlacementProblem:
    """Demands (one per model) with every shape on every node group present in ``nodes``, each
    with its price and capacity; the config's replanning knobs."""
    present = {node.group for node in nodes}
    groups = [group for group in config.fleet.node_groups if group.name in present]
    utilization = config.placement.gpu_memory_utilization
    demand = merged_demand(config, observed)
    demands = []
    for model in config.models:
        classes = demand.get(model.name, ())
        buckets = demand_sizes(classes)
        shapes = tuple(
            with_capacity(shape, model, group, config, buckets)
            for group in groups
            for shape in replica_shapes(model, group, utilization)
        )
        demands.append(ModelDemand(model.name, model.replicas, shapes, classes))
    return PlacementProblem(
        tuple(nodes),
        tuple(demands),
        tuple(current),
        hysteresis=config.placement.replan_hysteresis,
        max_disruptions=config.placement.max_disruptions,
    )


def plan(
    solver: PlacementSolver,
    config: GearshiftConfig,
    nodes: Sequence[NodeView],
    current: Sequence[ReplicaAssignment],
    observed: ObservedDemand | None = None,
) -> PlacementPlan:
    return solver.solve(build_problem(config, nodes, current, observed))
