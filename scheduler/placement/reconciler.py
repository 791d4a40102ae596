"""``reconcile``: the actions that turn what runs into what the plan wants.

Pure and idempotent: the same (plan, actual) always gives the same actions; starts come before
stops so capacity is added before it is removed. Given which replicas are ready, it also makes
before it breaks: a ready replica the plan no longer wants keeps serving until every planned
replica of its model is ready, unless a planned start needs its node.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from scheduler.framework.placement import PlacementPlan, ReplicaAssignment
from scheduler.placement.actions import Action, StartReplica, StopReplica


def reconcile(
    plan: PlacementPlan,
    actual: Iterable[str],
    *,
    current: Iterable[ReplicaAssignment] = (),
    ready: Collection[str] | None = None,
) -> list[Action]:
    """Start every planned replica that is not running; stop every running one not planned.

    ``current`` (the running replicas' assignments) and ``ready`` (the ids serving now) turn on
    make-before-break; without ``ready`` every unplanned replica stops at once.
    """
    running = set(actual)
    wanted = {assignment.replica_id for assignment in plan.assignments}
    starts: list[Action] = [
        StartReplica(assignment)
        for assignment in plan.assignments
        if assignment.replica_id not in running
    ]
    assignments = {assignment.replica_id: assignment for assignment in current}
    stops: list[Action] = [
        StopReplica(replica_id, "no longer in the plan")
        for replica_id in sorted(running - wanted)
        if ready is None or not _still_needed(assignments.get(replica_id), plan, ready)
    ]
    return starts + stops


def _still_needed(
    assignment: ReplicaAssignment | None, plan: PlacementPlan, ready: Collection[str]
) -> bool:
    """A ready replica serves on while its model's planned replicas are not all ready, unless
    one of those is to start on its node (then it must make room)."""
    if assignment is None or assignment.replica_id not in ready:
        return False
    pending = [
        planned
        for planned in plan.assignments
        if planned.model == assignment.model and planned.replica_id not in ready
    ]
    return bool(pending) and all(planned.node_id != assignment.node_id for planned in pending)
