"""Build the placement problem from config, inventory and what runs, and ask the solver."""

from __future__ import annotations

from collections.abc import Sequence

from scheduler.config import GearshiftConfig
from scheduler.framework.placement import (
    ModelDemand,
    NodeView,
    PlacementPlan,
    PlacementProblem,
    PlacementSolver,
    ReplicaAssignment,
)
from scheduler.placement.shapes import replica_shapes


def build_problem(
    config: GearshiftConfig,
    nodes: Sequence[NodeView],
    current: Sequence[ReplicaAssignment],
) -> PlacementProblem:
    """Demands (one per model) with every shape on every node group present in ``nodes``."""
    present = {node.group for node in nodes}
    groups = [group for group in config.fleet.node_groups if group.name in present]
    utilization = config.placement.gpu_memory_utilization
    demands = tuple(
        ModelDemand(
            model=model.name,
            replicas=model.replicas,
            shapes=tuple(
                shape for group in groups for shape in replica_shapes(model, group, utilization)
            ),
        )
        for model in config.models
    )
    return PlacementProblem(tuple(nodes), demands, tuple(current))


def plan(
    solver: PlacementSolver,
    config: GearshiftConfig,
    nodes: Sequence[NodeView],
    current: Sequence[ReplicaAssignment],
) -> PlacementPlan:
    return solver.solve(build_problem(config, nodes, current))
