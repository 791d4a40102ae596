"""From a cost solver's allocation to a ``PlacementPlan``: packing, coverage, reasons, notes.

Coverage counts only replicas that found a node (a candidate's served demand shrinks with the
share of its replicas packed). Every shortfall gets a rejection: an unmet floor, replicas that
fit the group's total but no single node, and each (model, class) with demand unserved.
"""

from __future__ import annotations

from collections.abc import Sequence

from policies.placement import cost_reasons
from policies.placement.cost_model import CLASS_ORDER, DEMAND_TOLERANCE, Allocation, CostModel
from policies.placement.cost_packing import Packing, pack
from scheduler.framework.placement import Coverage, PlacementPlan
from scheduler.framework.plugin import Rejection, Verdict
from scheduler.types import Ownership, TrafficClass


def _served(
    model: CostModel, allocation: Allocation, placed: Sequence[int]
) -> dict[tuple[int, TrafficClass], float]:
    """Req/s per (model, class) the placed replicas serve."""
    served: dict[tuple[int, TrafficClass], float] = {}
    for (i, traffic_class), rate in sorted(allocation.served.items()):
        wanted = allocation.replicas[i]
        share = placed[i] / wanted if wanted else 0.0
        key = (model.candidates[i].model, traffic_class)
        served[key] = served.get(key, 0.0) + rate * share
    return served


def _notes(model: CostModel, allocation: Allocation, packing: Packing) -> tuple[str, ...]:
    notes = [allocation.how]
    if packing.moved == 1:
        notes.append("1 running replica moves to another node to make room")
    elif packing.moved:
        notes.append(f"{packing.moved} running replicas move to other nodes to make room")
    nodes = {node.node_id: node for pool in model.pools.values() for node in pool.nodes}
    interruptible = {
        (model.demands[c.model].model, c.group, c.tensor_parallel)
        for c in model.candidates
        if c.shape.interruptible
    }
    spot = sum(
        1
        for a in packing.assignments
        if nodes[a.node_id].ownership is Ownership.SPOT
        or (a.model, nodes[a.node_id].group, a.tensor_parallel) in interruptible
    )
    if spot:
        noun = "replica" if spot == 1 else "replicas"
        notes.append(f"{spot} {noun} on spot capacity (interruptible)")
    return tuple(notes)


def _unserved(
    model: CostModel, allocation: Allocation, packing: Packing
) -> tuple[list[Coverage], list[Rejection]]:
    planned = _served(model, allocation, allocation.replicas)
    served = _served(model, allocation, packing.placed)
    coverage: list[Coverage] = []
    unplaced: list[Rejection] = []
    for m, demand in enumerate(model.demands):
        listed = {item.traffic_class for item in demand.classes}
        for traffic_class in (c for c in CLASS_ORDER if c in listed):
            rate = model.rate(m, traffic_class)
            got = min(rate, served.get((m, traffic_class), 0.0))
            tolerance = DEMAND_TOLERANCE * max(1.0, rate)
            if rate - got <= tolerance:
                coverage.append(Coverage(demand.model, traffic_class, rate, rate))
                continue
            coverage.append(Coverage(demand.model, traffic_class, rate, got))
            if rate - planned.get((m, traffic_class), 0.0) > tolerance:
                unplaced.append(
                    cost_reasons.demand_unserved(model, m, traffic_class, rate - got, packing.free)
                )
            else:
                reason = (
                    f"{rate - got:.3g} of {rate:.3g} req/s of {traffic_class} demand unserved: "
                    "replicas planned for it found no node (see the fragmentation reason)"
                )
                unplaced.append(Rejection(demand.model, Verdict.UNFIT, reason, code="fragmented"))
    return coverage, unplaced


def render(model: CostModel, allocation: Allocation) -> PlacementPlan:
    """Pack ``allocation`` and explain what it leaves out."""
    packing = pack(model, allocation.replicas)
    unplaced: list[Rejection] = []
    for m, demand in enumerate(model.demands):
        allocated = sum(allocation.replicas[i] for i in model.by_model[m])
        if allocated < demand.replicas:
            unplaced.append(
                cost_reasons.floor_short(model, m, demand.replicas - allocated, packing.free)
            )
        for i in model.by_model[m]:
            lost = allocation.replicas[i] - packing.placed[i]
            if lost > 0:
                candidate = model.candidates[i]
                free = packing.free.get(candidate.group, 0)
                unplaced.append(cost_reasons.fragmented(model, candidate, lost, free))
    coverage, unserved = _unserved(model, allocation, packing)
    return PlacementPlan(
        assignments=packing.assignments,
        unplaced=tuple(unplaced + unserved),
        coverage=tuple(coverage),
        notes=_notes(model, allocation, packing),
    )
