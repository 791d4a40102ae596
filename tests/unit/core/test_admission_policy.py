"""The pure admission policy: strict priority, saturation gates, bounds, TTLs, eviction order
and removal, on a fake clock (plain numbers); plus the saturation measure and the SLO filter."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from scheduler.config import AdmissionConfig, ClassAdmission
from scheduler.framework.routing import EndpointView, Filter, RouteRequest
from scheduler.gateway.admission import (
    AdmissionPolicy,
    Ticket,
    Verdict,
    fleet_saturation,
    replica_saturation,
)
from scheduler.types import ReplicaState, TrafficClass

INT, S, B = TrafficClass.INTERACTIVE, TrafficClass.STANDARD, TrafficClass.BATCH


def _limits(
    max_queued: int = 10, bytes_: int = 10_000, ttl: float = 5.0, threshold: float | None = 0.5
) -> ClassAdmission:
    return ClassAdmission(
        max_queued=max_queued,
        max_queued_bytes=bytes_,
        queue_ttl_s=ttl,
        saturation_threshold=threshold,
    )


def _policy(**overrides: Any) -> AdmissionPolicy:
    settings: dict[str, Any] = {
        "interactive": _limits(threshold=None),
        "standard": _limits(threshold=0.9),
        "batch": _limits(threshold=0.5, ttl=20.0),
        "max_queued_total": 20,
        "max_queued_bytes_total": 100_000,
    }
    settings.update(overrides)
    return AdmissionPolicy(AdmissionConfig(**settings))


def _queued(policy: AdmissionPolicy, cls: TrafficClass, now: float = 0.0, **kw: Any) -> Ticket:
    offer = policy.offer(kw.get("model", "m"), cls, kw.get("size", 100), 1.0, now)
    assert offer.verdict is Verdict.QUEUED and offer.ticket is not None
    return offer.ticket


@pytest.mark.parametrize(
    ("cls", "saturation", "verdict"),
    [
        (INT, 1.0, Verdict.ADMIT),  # interactive: whenever routing found a replica
        (S, 0.89, Verdict.ADMIT),
        (S, 0.9, Verdict.QUEUED),
        (B, 0.49, Verdict.ADMIT),
        (B, 0.5, Verdict.QUEUED),
        (B, 0.95, Verdict.QUEUED),
    ],
)
def test_gates_open_below_the_class_threshold(
    cls: TrafficClass, saturation: float, verdict: Verdict
) -> None:
    assert _policy().offer("m", cls, 10, saturation, 0.0).verdict is verdict


def test_a_class_never_overtakes_its_own_queue_or_a_higher_class() -> None:
    policy = _policy()
    _queued(policy, S)
    # The gates are open again, but standard already waits: FIFO for standard, batch behind it.
    assert policy.offer("m", S, 10, 0.0, 1.0).verdict is Verdict.QUEUED
    assert policy.offer("m", B, 10, 0.0, 1.0).verdict is Verdict.QUEUED
    # Another model is not held up by this one's queue.
    assert policy.offer("other", B, 10, 0.0, 1.0).verdict is Verdict.ADMIT


def test_grant_is_strict_priority_fifo_and_one_gated_ticket_per_model_per_round() -> None:
    policy = _policy(interactive=_limits(threshold=0.99))
    batch = _queued(policy, B, 0.0)
    standard = [_queued(policy, S, 1.0), _queued(policy, S, 2.0)]
    interactive = _queued(policy, INT, 3.0)
    levels = {"m": 0.0}
    rounds = [policy.grant(levels.__getitem__) for _ in range(4)]
    assert rounds == [[interactive], [standard[0]], [standard[1]], [batch]]
    assert policy.queued() == 0


def test_saturation_holds_lower_classes_and_what_waits_behind_them() -> None:
    policy = _policy()
    batch = _queued(policy, B)
    standard = _queued(policy, S)
    assert policy.grant(lambda model: 0.95) == []  # both gates closed
    assert policy.grant(lambda model: 0.7) == [standard]  # standard's open, batch's not
    assert policy.grant(lambda model: 0.7) == []
    assert policy.grant(lambda model: 0.1) == [batch]


@pytest.mark.parametrize(
    ("limits", "size", "why"),
    [
        (_limits(max_queued=2, threshold=0.5), 1, "count"),
        (_limits(bytes_=250, threshold=0.5), 100, "bytes"),
    ],
)
def test_a_full_class_queue_rejects_at_once(limits: ClassAdmission, size: int, why: str) -> None:
    policy = _policy(batch=limits)
    _queued(policy, B, size=size)
    _queued(policy, B, size=size)
    offer = policy.offer("m", B, size, 1.0, 0.0)
    assert offer.verdict is Verdict.REJECT and offer.code == "queue_full", why
    assert policy.queued(B) == 2


def test_ttl_expiry_takes_out_only_the_old_enough() -> None:
    policy = _policy()
    standard = _queued(policy, S, 0.0)  # ttl 5
    batch = _queued(policy, B, 1.0)  # ttl 20
    late = _queued(policy, S, 3.0)
    assert policy.expire(4.99) == []
    assert policy.expire(5.0) == [standard]
    assert policy.expire(20.0) == [late]
    assert policy.expire(21.0) == [batch]
    assert policy.queued() == 0


def test_a_full_total_evicts_the_youngest_lowest_class_first() -> None:
    policy = _policy(interactive=_limits(threshold=0.99), max_queued_total=4)
    batch = [_queued(policy, B, float(t)) for t in range(2)]
    standard = [_queued(policy, S, float(t)) for t in range(2)]
    arrivals = [policy.offer("m", INT, 100, 1.0, 9.0) for _ in range(4)]
    assert [o.verdict for o in arrivals] == [Verdict.QUEUED] * 4
    assert [o.evicted for o in arrivals] == [
        (batch[1],),
        (batch[0],),
        (standard[1],),
        (standard[0],),
    ]
    # Nothing lower is left to shed: the fifth interactive request is refused, none evicted.
    refused = policy.offer("m", INT, 100, 1.0, 9.0)
    assert refused.verdict is Verdict.REJECT and refused.evicted == ()
    # Batch never evicts anything.
    assert policy.offer("m", B, 100, 1.0, 9.0).verdict is Verdict.REJECT


def test_a_refused_request_sheds_nothing() -> None:
    policy = _policy(
        interactive=_limits(threshold=0.99, bytes_=10_000),
        max_queued_total=10,
        max_queued_bytes_total=300,
    )
    batch = _queued(policy, B, size=100)
    interactive = _queued(policy, INT, size=100)
    offer = policy.offer("m", INT, 250, 1.0, 0.0)  # even without the batch ticket it would not fit
    assert offer.verdict is Verdict.REJECT and offer.evicted == ()
    assert policy.queued(B) == 1
    assert [*policy.grant(lambda m: 0.0), *policy.grant(lambda m: 0.0)] == [interactive, batch]


def test_removal_of_a_disconnected_client() -> None:
    policy = _policy()
    first, second = _queued(policy, S), _queued(policy, S)
    assert policy.remove(first) is True
    assert policy.remove(first) is False
    assert policy.grant(lambda model: 0.0) == [second]
    assert policy.queued() == 0


# ------------------------------------------------------------------------------- saturation


def test_saturation_is_kv_slots_or_queue_depth_averaged_over_ready_replicas(
    make_endpoint: Callable[..., EndpointView],
) -> None:
    idle = make_endpoint("a", max_num_seqs=8)
    kv_full = make_endpoint("b", kv_usage=0.9, max_num_seqs=8)
    half_slots = make_endpoint("c", running=4, max_num_seqs=8)
    queued = make_endpoint("d", running=8, waiting=4, max_num_seqs=8)
    starting = make_endpoint("e", state=ReplicaState.STARTING, kv_usage=1.0)
    assert replica_saturation(idle, 8) == 0.0
    assert replica_saturation(kv_full, 8) == 0.9
    assert replica_saturation(half_slots, 8) == 0.5  # half its batch slots busy
    assert replica_saturation(queued, 8) == 1.0  # every slot busy, and requests wait
    assert fleet_saturation([idle, kv_full, half_slots, starting], 8) == pytest.approx(1.4 / 3)
    assert fleet_saturation([starting], 8) == 1.0


# ------------------------------------------------------------------------------ SLO filter


def test_slo_filter_spills_only_to_replicas_that_meet_the_target(
    make_plugin: Callable[..., Any],
    make_endpoint: Callable[..., EndpointView],
    make_request: Callable[..., RouteRequest],
    cycle: Any,
) -> None:
    plugin = make_plugin("slo-ttft-filter", Filter, ttft_s=0.2)
    fast = make_endpoint("fast", prefill_tokens_per_s=100_000.0)
    slow = make_endpoint("slow", prefill_tokens_per_s=1_000.0)  # 1000 tokens: ~1 s prefill
    busy = make_endpoint("busy", prefill_tokens_per_s=100_000.0, running=8, waiting=200)
    request = make_request(prompt_tokens=1000)
    result = plugin.filter(request, [fast, slow, busy], cycle)
    assert [e.replica_id for e in result.kept] == ["fast"]
    assert {r.subject for r in result.rejected} == {"slow", "busy"}
    assert all("exceeds the 0.2 s target" in r.reason for r in result.rejected)
    assert fast.predicted_ttft_s(1000) <= 0.2 < slow.predicted_ttft_s(1000)


def test_slo_filter_keeps_the_fastest_when_none_meets_the_target(
    make_plugin: Callable[..., Any],
    make_endpoint: Callable[..., EndpointView],
    make_request: Callable[..., RouteRequest],
    cycle: Any,
) -> None:
    slow = make_endpoint("slow", prefill_tokens_per_s=1_000.0)
    slower = make_endpoint("slower", prefill_tokens_per_s=500.0)
    request = make_request(prompt_tokens=1000)
    keeps = make_plugin("slo-ttft-filter", Filter, ttft_s=0.1)
    assert [e.replica_id for e in keeps.filter(request, [slow, slower], cycle).kept] == ["slow"]
    strict = make_plugin("slo-ttft-filter", Filter, ttft_s=0.1, keep_fastest=False)
    assert strict.filter(request, [slow, slower], cycle).kept == ()
