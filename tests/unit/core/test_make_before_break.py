"""Make-before-break in ``reconcile``: a replica the plan drops serves until its replacement is
ready, unless the replacement needs its node."""

from __future__ import annotations

from scheduler.framework.placement import PlacementPlan, ReplicaAssignment
from scheduler.placement.actions import StartReplica, StopReplica
from scheduler.placement.reconciler import reconcile


def _on(replica_id: str, node_id: str, model: str = "m") -> ReplicaAssignment:
    return ReplicaAssignment(replica_id, model, node_id, "L4", 1, 1.0)


OLD = _on("m.a100-0.0", "a100-0")
NEW = _on("m.l4-0.0", "l4-0")
OTHER = _on("other.l4-1.0", "l4-1", model="other")


def _stops(actions: list[StartReplica | StopReplica]) -> list[str]:
    return [a.replica_id for a in actions if isinstance(a, StopReplica)]


def test_the_old_replica_serves_until_the_new_one_is_ready() -> None:
    plan = PlacementPlan((NEW,))
    starting = reconcile(plan, [OLD.replica_id], current=[OLD], ready={OLD.replica_id})
    assert starting == [StartReplica(NEW)], "start the new one, keep the old one serving"

    loading = reconcile(
        plan, [OLD.replica_id, NEW.replica_id], current=[OLD, NEW], ready={OLD.replica_id}
    )
    assert loading == [], "the replacement is still loading"

    both_ready = {OLD.replica_id, NEW.replica_id}
    done = reconcile(plan, both_ready, current=[OLD, NEW], ready=both_ready)
    assert done == [StopReplica(OLD.replica_id, "no longer in the plan")]


def test_a_start_on_the_same_node_breaks_first() -> None:
    same_node = _on("m.a100-0.1", "a100-0")
    actions = reconcile(
        PlacementPlan((same_node,)), [OLD.replica_id], current=[OLD], ready={OLD.replica_id}
    )
    assert actions == [
        StartReplica(same_node),
        StopReplica(OLD.replica_id, "no longer in the plan"),
    ]


def test_replicas_that_do_not_serve_stop_at_once() -> None:
    plan = PlacementPlan((NEW,))
    assert _stops(reconcile(plan, [OLD.replica_id], current=[OLD], ready=set())) == [OLD.replica_id]
    # Unknown to `current` (e.g. a zombie): nothing to keep serving.
    assert _stops(reconcile(plan, ["zombie"], current=[], ready={"zombie"})) == ["zombie"]


def test_another_models_pending_start_does_not_hold_a_stop() -> None:
    plan = PlacementPlan((OTHER,))
    actions = reconcile(plan, [OLD.replica_id], current=[OLD], ready={OLD.replica_id})
    assert _stops(actions) == [OLD.replica_id], "no replica of `m` is planned: nothing to wait for"


def test_without_readiness_every_unplanned_replica_stops() -> None:
    assert _stops(reconcile(PlacementPlan((NEW,)), [OLD.replica_id], current=[OLD])) == [
        OLD.replica_id
    ]
