"""Operator-readable reasons for what a cost solver's plan leaves out.

Each function returns one ``Rejection`` whose subject is the model: ``unresolvable`` when no
shape can ever do it (quoting the shapes' own fit or capacity reasons), ``unfit`` when more or
less fragmented hardware would (saying how many accelerators of which type).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from policies.placement.cost_model import Candidate, CostModel
from scheduler.framework.placement import ReplicaShape
from scheduler.framework.plugin import Rejection, Verdict
from scheduler.types import TrafficClass

_LISTED = 4
"""Shapes quoted in one reason; the rest are counted."""


def _label(shape: ReplicaShape) -> str:
    return f"{shape.accelerator} TP{shape.tensor_parallel} on {shape.group}"


def _listing(parts: Sequence[str]) -> str:
    unique = sorted(set(parts))
    shown = "; ".join(unique[:_LISTED])
    more = len(unique) - _LISTED
    return f"{shown}; and {more} more" if more > 0 else shown


def _free(model: CostModel, candidates: Sequence[Candidate], free: Mapping[str, int]) -> str:
    groups = sorted({c.group for c in candidates})
    return ", ".join(
        f"{g} {free.get(g, 0)} of {model.pools[g].accelerators}" for g in groups[:_LISTED]
    ) + (f" and {len(groups) - _LISTED} more groups" if len(groups) > _LISTED else "")


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def floor_short(model: CostModel, m: int, short: int, free: Mapping[str, int]) -> Rejection:
    """``short`` replicas of model ``m``'s floor found no place."""
    demand = model.demands[m]
    head = f"{short} of {demand.replicas} replicas unplaced"
    candidates = [model.candidates[i] for i in model.by_model[m]]
    if not candidates:
        fitting = [s for s in demand.shapes if s.fits]
        if fitting:
            groups = ", ".join(sorted({s.group for s in fitting}))
            reason = f"{head}: no alive node in the groups it fits on ({groups})"
            return Rejection(demand.model, Verdict.UNFIT, reason, code="no_alive_node")
        reasons = _listing([f"{_label(s)}: {s.reason}" for s in demand.shapes])
        return Rejection(
            demand.model,
            Verdict.UNRESOLVABLE,
            f"{head}: fits no accelerator in the fleet" + (f" ({reasons})" if reasons else ""),
            code="no_fitting_shape",
        )
    best = min(candidates, key=lambda c: (c.price, c.rank))
    reason = (
        f"{head}: every node it fits on is full; "
        f"{short * best.tensor_parallel} more {best.shape.accelerator} accelerators "
        f"({_plural(short, 'replica')} at TP{best.tensor_parallel} on {best.group}) would place "
        f"them (free accelerators: {_free(model, candidates, free)})"
    )
    return Rejection(demand.model, Verdict.UNFIT, reason, code="accelerators_exhausted")


def demand_unserved(
    model: CostModel, m: int, traffic_class: TrafficClass, unserved: float, free: Mapping[str, int]
) -> Rejection:
    """``unserved`` req/s of model ``m``'s ``traffic_class`` demand have no capacity."""
    demand = model.demands[m]
    head = (
        f"{unserved:.3g} of {model.rate(m, traffic_class):.3g} req/s of {traffic_class} "
        "demand unserved"
    )
    serving = [
        model.candidates[i]
        for i in model.by_model[m]
        if model.candidates[i].capacity(traffic_class) > 0
    ]
    if serving:
        best = min(
            serving,
            key=lambda c: (
                c.price / c.capacity(traffic_class),
                -c.capacity(traffic_class),
                c.rank,
            ),
        )
        capacity = best.capacity(traffic_class)
        replicas = max(1, math.ceil(unserved / capacity - 1e-6))
        reason = (
            f"{head}: not enough free accelerators; about "
            f"{replicas * best.tensor_parallel} more {best.shape.accelerator} "
            f"({_plural(replicas, 'replica')} at TP{best.tensor_parallel} on {best.group}, "
            f"{capacity:.3g} req/s each) would serve it "
            f"(free accelerators: {_free(model, serving, free)})"
        )
        return Rejection(demand.model, Verdict.UNFIT, reason, code="accelerators_exhausted")
    able = [s for s in demand.shapes if s.fits and s.capacity.get(traffic_class, 0.0) > 0]
    if able:
        groups = ", ".join(sorted({s.group for s in able}))
        reason = f"{head}: no alive node in the groups that meet its targets ({groups})"
        return Rejection(demand.model, Verdict.UNFIT, reason, code="no_alive_node")
    parts = [
        f"{_label(s)}: "
        + (
            f"does not fit ({s.reason})"
            if not s.fits
            else s.capacity_reasons.get(traffic_class, "no capacity within the class targets")
        )
        for s in demand.shapes
    ]
    reason = f"{head}: no shape meets the {traffic_class} targets" + (
        f" ({_listing(parts)})" if parts else " (the model has no shape on this fleet)"
    )
    return Rejection(demand.model, Verdict.UNRESOLVABLE, reason, code="no_shape_meets_targets")


def fragmented(model: CostModel, candidate: Candidate, count: int, free: int) -> Rejection:
    """``count`` replicas of ``candidate`` fit its pool's total but no single node."""
    tp = candidate.tensor_parallel
    reason = (
        f"{_plural(count, 'replica')} at TP{tp} on {candidate.group} found no node with {tp} "
        f"free accelerators together ({free} free across the group, split between nodes by "
        "running replicas the disruption budget keeps in place)"
    )
    return Rejection(model.demands[candidate.model].model, Verdict.UNFIT, reason, code="fragmented")
