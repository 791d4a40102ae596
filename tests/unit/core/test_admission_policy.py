"""The pure admission policy: strict priority, saturation gates, bounds, TTLs, eviction order
and removal, on a fake clock (plain numbers); plus the saturation measure and the SLO filter."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest

from scheduler.config import AdmissionConfig, ClassAdmission
from scheduler.framework.routing import Cycle, EndpointView, Filter, RouteRequest
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
    rounds = [policy.grant(lambda model, _: levels[model]) for _ in range(4)]
    assert rounds == [[interactive], [standard[0]], [standard[1]], [batch]]
    assert policy.queued() == 0


def test_saturation_holds_lower_classes_and_what_waits_behind_them() -> None:
    policy = _policy()
    batch = _queued(policy, B)
    standard = _queued(policy, S)
    assert policy.grant(lambda model, _: 0.95) == []  # both gates closed
    assert policy.grant(lambda model, _: 0.7) == [standard]  # standard's open, batch's not
    assert policy.grant(lambda model, _: 0.7) == []
    assert policy.grant(lambda model, _: 0.1) == [batch]


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
    granted = [*policy.grant(lambda m, _: 0.0), *policy.grant(lambda m, _: 0.0)]
    assert granted == [interactive, batch]


def test_removal_of_a_disconnected_client() -> None:
    policy = _policy()
    first, second = _queued(policy, S), _queued(policy, S)
    assert policy.remove(first) is True
    assert policy.remove(first) is False
    assert policy.grant(lambda model, _: 0.0) == [second]
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


def test_slo_filter_takes_the_requests_class_target_when_it_sets_none(
    make_plugin: Callable[..., Any],
    make_endpoint: Callable[..., EndpointView],
    make_request: Callable[..., RouteRequest],
    cycle: Any,
) -> None:
    plugin = make_plugin("slo-ttft-filter", Filter)
    fast = make_endpoint("fast", prefill_tokens_per_s=100_000.0)
    slow = make_endpoint("slow", prefill_tokens_per_s=1_000.0)  # 1000 tokens: ~1 s prefill
    interactive = make_request(prompt_tokens=1000, ttft_target_s=0.5)
    result = plugin.filter(interactive, [fast, slow], cycle)
    assert [e.replica_id for e in result.kept] == ["fast"]
    assert [r.reason for r in result.rejected] == [
        f"predicted TTFT {slow.predicted_ttft_s(1000):.3f} s exceeds the 0.5 s target"
    ]
    relaxed = make_request(prompt_tokens=1000, ttft_target_s=2.0)
    assert [e.replica_id for e in plugin.filter(relaxed, [fast, slow], cycle).kept] == [
        "fast",
        "slow",
    ]
    no_target = make_request(prompt_tokens=1000)
    assert plugin.filter(no_target, [fast, slow], cycle).kept == (fast, slow)


# ----------------------------------------------------------------------- yield to interactive


def test_batch_yields_replicas_that_serve_or_just_served_interactive_work(
    make_plugin: Callable[..., Any],
    make_endpoint: Callable[..., EndpointView],
    make_request: Callable[..., RouteRequest],
) -> None:
    now = 1000.0
    plugin = make_plugin("yield-to-interactive-filter", Filter)
    idle_fast = make_endpoint("fast-idle", interactive_until=now - 5.0)
    serving = make_endpoint("fast-serving", interactive=2, in_flight=2)
    just_served = make_endpoint("fast-just-served", interactive_until=now - 0.5)
    cheap = make_endpoint("cheap", running=6, in_flight=6)  # busy, but never with interactive
    batch = make_request(traffic_class=TrafficClass.BATCH, yield_s=2.0)
    candidates = [idle_fast, serving, just_served, cheap]
    result = plugin.filter(batch, candidates, Cycle(now=now, rng=random.Random(0)))
    assert [e.replica_id for e in result.kept] == ["fast-idle", "cheap"]
    assert [(r.subject, r.reason) for r in result.rejected] == [
        ("fast-serving", "serving 2 interactive requests: batch yields"),
        ("fast-just-served", "served interactive work 0.5 s ago (yields for 2 s)"),
    ]
    no_yield = make_request(traffic_class=TrafficClass.BATCH)  # a class that does not yield
    assert plugin.filter(no_yield, candidates, Cycle(now=now, rng=random.Random(0))).kept == (
        tuple(candidates)
    )


def test_when_every_replica_serves_interactive_batch_takes_the_one_left_longest_or_none(
    make_plugin: Callable[..., Any],
    make_endpoint: Callable[..., EndpointView],
    make_request: Callable[..., RouteRequest],
) -> None:
    cycle = Cycle(now=1000.0, rng=random.Random(0))
    serving = make_endpoint("serving", interactive=1)
    recent = make_endpoint("recent", interactive_until=999.5)
    older = make_endpoint("older", interactive_until=998.5)
    batch = make_request(traffic_class=TrafficClass.BATCH, yield_s=2.0)
    keeps = make_plugin("yield-to-interactive-filter", Filter)
    kept = keeps.filter(batch, [serving, recent, older], cycle).kept
    assert [e.replica_id for e in kept] == ["older"]
    strict = make_plugin("yield-to-interactive-filter", Filter, keep_least_busy=False)
    assert strict.filter(batch, [serving, recent, older], cycle).kept == ()
    shorter = make_plugin("yield-to-interactive-filter", Filter, quiet_s=1.0)
    assert [e.replica_id for e in shorter.filter(batch, [serving, recent, older], cycle).kept] == [
        "older"
    ]


def test_a_yielding_class_sees_the_saturation_of_the_replicas_it_may_use(
    make_endpoint: Callable[..., EndpointView],
) -> None:
    fast = make_endpoint("fast", interactive=1, in_flight=1, max_num_seqs=8)  # slots free
    cheap = make_endpoint("cheap", running=8, waiting=2, max_num_seqs=8)
    assert fleet_saturation([fast, cheap], 8) == pytest.approx((1 / 8 + 1.0) / 2)
    assert fleet_saturation([fast, cheap], 8, yield_s=2.0, now=10.0) == 1.0
    assert fleet_saturation([fast], 8, yield_s=2.0, now=10.0) == 1.0  # none to use


# ------------------------------------------------------------------------- fairness (C7)


def test_a_tenant_that_floods_a_class_waits_behind_its_own_backlog() -> None:
    policy = _policy(batch=_limits(max_queued=20, ttl=20.0))
    noisy = [policy.offer("m", B, 10, 1.0, float(t), "noisy").ticket for t in range(10)]
    victim = [policy.offer("m", B, 10, 1.0, 10.0 + t, "victim").ticket for t in range(2)]
    granted = [t for _ in range(12) for t in policy.grant(lambda model, _: 0.0)]
    # Round robin while both have work: the victim's first request goes second, not 11th.
    assert granted[:4] == [noisy[0], victim[0], noisy[1], victim[1]]
    assert granted[4:] == noisy[2:]
    assert policy.queued() == 0


def test_one_tenant_alone_is_fifo_and_a_returning_tenant_gets_no_credit() -> None:
    policy = _policy()
    first = [policy.offer("m", B, 10, 1.0, float(t), "a").ticket for t in range(3)]
    assert [t for _ in range(3) for t in policy.grant(lambda model, _: 0.0)] == first
    # Tenant b was idle all along: it starts at the current virtual time, not ahead of a's
    # next requests by the three it did not send.
    a_next = policy.offer("m", B, 10, 1.0, 5.0, "a").ticket
    b_burst = [policy.offer("m", B, 10, 1.0, 6.0 + t, "b").ticket for t in range(3)]
    granted = [t for _ in range(4) for t in policy.grant(lambda model, _: 0.0)]
    assert granted == [a_next, *b_burst]


def test_fair_order_survives_expiry_eviction_and_removal() -> None:
    policy = AdmissionPolicy(AdmissionConfig(batch=_limits(ttl=5.0), max_queued_total=4))
    old = policy.offer("m", B, 10, 1.0, 0.0, "a").ticket
    kept = policy.offer("m", B, 10, 1.0, 4.0, "b").ticket
    gone = policy.offer("m", B, 10, 1.0, 4.5, "a").ticket
    assert old is not None and kept is not None and gone is not None
    assert policy.expire(5.0) == [old]
    assert policy.remove(gone)
    assert policy.grant(lambda model, _: 0.0) == [kept]
    assert policy.queued() == 0
