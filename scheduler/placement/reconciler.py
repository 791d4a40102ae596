"""``reconcile``: the actions that turn what runs into what the plan wants.

Pure and idempotent: the same (plan, actual) always gives the same actions; starts come before
stops so capacity is added before it is removed.
"""

from __future__ import annotations

from collections.abc import Iterable

from scheduler.framework.placement import PlacementPlan
from scheduler.placement.actions import Action, StartReplica, StopReplica


def reconcile(plan: PlacementPlan, actual: Iterable[str]) -> list[Action]:
    """Start every planned replica that is not running; stop every running one not planned."""
    running = set(actual)
    wanted = {assignment.replica_id for assignment in plan.assignments}
    starts: list[Action] = [
        StartReplica(assignment)
        for assignment in plan.assignments
        if assignment.replica_id not in running
    ]
    stops: list[Action] = [
        StopReplica(replica_id, "no longer in the plan") for replica_id in sorted(running - wanted)
    ]
    return starts + stops
