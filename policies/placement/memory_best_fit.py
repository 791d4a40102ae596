"""``memory-best-fit-solver``: keep what runs, then place each missing replica on the node
whose accelerators it fills most tightly (best-fit decreasing by memory).

CPU nodes are the fallback tier: a replica goes to one only when no accelerator it fits on is
free (memory alone would happily put an 8B model on a 64 GiB CPU box). With
``spread_accelerator_types`` a model's replicas first go to accelerator types it does not use
yet, so every traffic class finds a fitting tier (fast cards for interactive, cheap ones for
batch); ties go to the smaller tensor-parallel degree, then the cheaper node.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import ClassVar

from pydantic import Field

from scheduler.framework.placement import (
    ModelDemand,
    NodeView,
    PlacementPlan,
    PlacementProblem,
    PlacementSolver,
    ReplicaAssignment,
    ReplicaShape,
)
from scheduler.framework.plugin import PluginParams, PluginType, Rejection, Verdict


class MemoryBestFitParams(PluginParams):
    spread_accelerator_types: bool = Field(
        True,
        description="Place a model's replicas on accelerator types it does not use yet first.",
    )


def replica_id(model: str, node_id: str, index: int) -> str:
    """A stable, URL- and Ray-safe replica id."""
    slug = re.sub(r"[^a-z0-9.\-]+", "-", model.lower()).strip("-")
    return f"{slug}.{node_id}.{index}"


@dataclass(frozen=True, slots=True)
class MemoryBestFitSolver:
    TYPE: ClassVar[str] = "memory-best-fit-solver"
    name: str
    params: MemoryBestFitParams

    def solve(self, problem: PlacementProblem) -> PlacementPlan:
        nodes = {node.node_id: node for node in problem.nodes if node.alive}
        free = {node_id: node.accelerator_count for node_id, node in nodes.items()}
        demands = {demand.model: demand for demand in problem.demands}
        # Ids of replicas being dropped stay taken, so a replacement never reuses one (the
        # reconciler would then keep the stale replica running).
        used_ids = {assignment.replica_id for assignment in problem.current}
        kept: list[ReplicaAssignment] = []

        # 1. Keep running replicas that are still wanted and still fit (stability first).
        #    Surplus replicas go, the most expensive first.
        by_cost = sorted(problem.current, key=lambda a: (a.price_per_hour, a.replica_id))
        count: Counter[str] = Counter()
        for assignment in by_cost:
            demand = demands.get(assignment.model)
            node = nodes.get(assignment.node_id)
            if demand is None or node is None or count[assignment.model] >= demand.replicas:
                continue
            if free[node.node_id] < assignment.tensor_parallel or not _still_fits(
                demand, node, assignment
            ):
                continue
            free[node.node_id] -= assignment.tensor_parallel
            count[assignment.model] += 1
            kept.append(assignment)

        # 2. Place what is missing, biggest models first.
        placed = list(kept)
        unplaced: list[Rejection] = []
        for demand in sorted(problem.demands, key=_largest_first):
            for _ in range(demand.replicas - count[demand.model]):
                choice = self._best_slot(demand, nodes, free, placed)
                if isinstance(choice, Rejection):
                    unplaced.append(choice)
                    break
                node, shape = choice
                index = 0
                while replica_id(demand.model, node.node_id, index) in used_ids:
                    index += 1
                rid = replica_id(demand.model, node.node_id, index)
                used_ids.add(rid)
                free[node.node_id] -= shape.tensor_parallel
                count[demand.model] += 1
                placed.append(
                    ReplicaAssignment(
                        replica_id=rid,
                        model=demand.model,
                        node_id=node.node_id,
                        accelerator=node.accelerator,
                        tensor_parallel=shape.tensor_parallel,
                        price_per_hour=node.price_per_accelerator_hour * shape.tensor_parallel,
                    )
                )
        return PlacementPlan(tuple(sorted(placed, key=lambda a: a.replica_id)), tuple(unplaced))

    def _best_slot(
        self,
        demand: ModelDemand,
        nodes: dict[str, NodeView],
        free: dict[str, int],
        placed: list[ReplicaAssignment],
    ) -> tuple[NodeView, ReplicaShape] | Rejection:
        fitting = [shape for shape in demand.shapes if shape.fits]
        if not fitting:
            reasons = sorted(
                {f"{s.accelerator} TP{s.tensor_parallel}: {s.reason}" for s in demand.shapes}
            )
            return Rejection(
                demand.model,
                Verdict.UNRESOLVABLE,
                "fits no accelerator in the fleet"
                + (f" ({'; '.join(reasons[:4])})" if reasons else ""),
            )
        used_types = {a.accelerator for a in placed if a.model == demand.model}
        best: tuple[tuple[bool, bool, float, int, float, str], NodeView, ReplicaShape] | None = None
        for shape in fitting:
            for node in nodes.values():
                if node.group != shape.group or free[node.node_id] < shape.tensor_parallel:
                    continue
                leftover = node.accelerator_memory_gib - shape.memory_per_device_gib
                key = (
                    shape.on_cpu,
                    self.params.spread_accelerator_types and node.accelerator in used_types,
                    leftover,
                    shape.tensor_parallel,
                    node.price_per_accelerator_hour,
                    node.node_id,
                )
                if best is None or key < best[0]:
                    best = (key, node, shape)
        if best is None:
            groups = sorted({shape.group for shape in fitting})
            return Rejection(
                demand.model,
                Verdict.UNFIT,
                f"every node it fits on is full (groups {', '.join(groups)})",
            )
        return best[1], best[2]


def _still_fits(demand: ModelDemand, node: NodeView, assignment: ReplicaAssignment) -> bool:
    """A running replica stays only if its shape on its node's group is still allowed and fits
    (an operator may have narrowed the model's accelerators or changed its TP)."""
    return any(
        shape.fits
        and shape.group == node.group
        and shape.tensor_parallel == assignment.tensor_parallel
        for shape in demand.shapes
    )


def _largest_first(demand: ModelDemand) -> tuple[float, str]:
    need = max((s.memory_per_device_gib * s.tensor_parallel for s in demand.shapes), default=0.0)
    return (-need, demand.model)


PLUGIN = PluginType(
    type_name=MemoryBestFitSolver.TYPE,
    kind=PlacementSolver,
    params=MemoryBestFitParams,
    factory=MemoryBestFitSolver,
    summary="Keeps running replicas, then places missing ones on the tightest-fitting free "
    "accelerators, spreading a model across accelerator types.",
)
