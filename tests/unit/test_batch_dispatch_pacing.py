"""The dispatcher's pure decisions (``scheduler.batches.pacing``): what an answer means for a
line, back-off, the AIMD window held while the gateway queues, the deadline's floor, lease
order, the flex → default escalation rule, and a batch's pace."""

from __future__ import annotations

import random

import pytest

from scheduler.batches.pacing import (
    BACKOFF_MAX_S,
    INITIAL_WINDOW,
    Backoff,
    BatchPace,
    RateMeter,
    Verdict,
    Window,
    back_off,
    in_flight_target,
    judge,
    lease_order,
    required_rate,
    service_tier,
)
from scheduler.types import ServiceTier

T0 = 1_700_000_000.0
V = Verdict


@pytest.mark.parametrize(
    ("status", "timed_out", "attempts", "verdict"),
    [
        (200, False, 1, V.RECORD),
        (201, False, 3, V.RECORD),
        (400, False, 1, V.RECORD),  # the engine or the gateway refused the line: its result
        (401, False, 1, V.RECORD),  # the batch's key was revoked
        (404, False, 3, V.RECORD),
        (413, False, 1, V.RECORD),
        (429, False, 1, V.NOT_NOW),  # the key's rate limit: later, attempt not counted
        (429, False, 3, V.NOT_NOW),
        (503, False, 1, V.NOT_NOW),  # no capacity now (queue full, shed, no replica)
        (503, False, 3, V.NOT_NOW),
        (None, False, 1, V.NOT_NOW),  # gateway unreachable or hung up: not the line's fault
        (None, False, 3, V.NOT_NOW),
        (502, False, 1, V.RETRY),  # the engine failed: counts as an attempt
        (500, False, 2, V.RETRY),
        (504, False, 2, V.RETRY),
        (502, False, 3, V.GIVE_UP),  # ... its last one: the 502 is the line's error result
        (None, True, 1, V.RETRY),  # took longer than the worker waits
        (None, True, 3, V.GIVE_UP),
        (302, False, 1, V.RETRY),
    ],
)
def test_judge(status: int | None, timed_out: bool, attempts: int, verdict: Verdict) -> None:
    assert judge(status, timed_out=timed_out, attempts=attempts, max_attempts=3) is verdict


def test_back_off_doubles_with_jitter_up_to_the_cap() -> None:
    rng = random.Random(7)
    backoff, now, delays = None, T0, []
    for _ in range(10):
        backoff = back_off(backoff, now, None, rng)
        delays.append(backoff.until - now)
        now = backoff.until
    for failures, delay in enumerate(delays, start=1):
        ceiling = min(BACKOFF_MAX_S, 0.5 * 2 ** (failures - 1))
        assert ceiling / 2 <= delay <= ceiling
    assert backoff is not None and backoff.failures == 10


def test_back_off_honours_retry_after_and_caps_it() -> None:
    rng = random.Random(1)
    assert back_off(None, T0, 4.0, rng).until == T0 + 4.0
    assert back_off(None, T0, 3600.0, rng).until == T0 + BACKOFF_MAX_S


def test_a_refusal_during_a_back_off_does_not_lengthen_it() -> None:
    first = Backoff(failures=2, until=T0 + 1.0)
    assert back_off(first, T0 + 0.5, None, random.Random(0)) is first
    later = back_off(first, T0 + 1.0, None, random.Random(0))
    assert later.failures == 3 and later.until > T0 + 1.0


def test_the_window_grows_by_one_per_window_of_answers() -> None:
    window = Window()
    for _ in range(int(INITIAL_WINDOW)):
        window = window.answered(0.1, limit=64)
    assert window.size == pytest.approx(INITIAL_WINDOW + 1, abs=0.15)
    for _ in range(3000):
        window = window.answered(0.1, limit=64)
    assert window.size == 64.0  # capped


def test_the_window_holds_while_answers_are_slower_than_twice_the_baseline() -> None:
    window = Window()
    for _ in range(50):
        window = window.answered(0.1, limit=64)
    size = window.size
    for _ in range(100):  # the gateway queues our lines: latency climbs
        window = window.answered(1.0, limit=64)
    assert window.queueing
    assert window.size == pytest.approx(size, abs=1.0)  # grew only until the average climbed
    for _ in range(100):
        window = window.answered(0.1, limit=64)
    assert not window.queueing and window.size > size


def test_the_window_halves_on_refusal_once_per_latency() -> None:
    window = Window(size=32.0, latency_s=0.5, baseline_s=0.5)
    halved = window.refused(T0)
    assert halved.size == 16.0
    assert halved.refused(T0 + 0.2).size == 16.0  # same burst
    assert halved.refused(T0 + 0.6).size == 8.0
    assert Window(size=1.0).refused(T0).size == 1.0


def pace(
    batch_id: str = "b",
    *,
    total: int = 1000,
    done: int = 0,
    pending: int | None = None,
    window_s: float = 86_400.0,
    created_at: float = T0,
) -> BatchPace:
    return BatchPace(
        batch_id=batch_id,
        created_at=created_at,
        expires_at=created_at + window_s,
        total=total,
        done=done,
        pending=total - done if pending is None else pending,
    )


def test_required_rate_and_the_deadlines_floor() -> None:
    backlog = [
        pace("a", total=1000, window_s=100.0),  # 10 lines/s
        pace("b", total=500, done=400, window_s=50.0),  # 2 lines/s
        pace("c", total=10, done=10, window_s=10.0),  # done: nothing
    ]
    assert required_rate(backlog, T0) == pytest.approx(12.0)
    window = Window(size=2.0, latency_s=2.0, baseline_s=2.0)
    assert in_flight_target(window, backlog, T0, limit=64) == 30  # ceil(12 x 2 x 1.25)
    assert in_flight_target(window, backlog, T0, limit=16) == 16
    assert in_flight_target(Window(size=5.0), backlog, T0, limit=64) == 5  # no latency yet
    assert in_flight_target(Window(size=5.0), [], T0, limit=64) == 5
    assert required_rate([pace("late", window_s=10.0)], T0 + 20) == 0.0


def test_lease_order_is_earliest_deadline_first_skipping_idle_late_and_backing_off() -> None:
    backlog = [
        pace("late-deadline", window_s=900.0),
        pace("early", window_s=100.0),
        pace("backing-off", window_s=50.0),
        pace("nothing-pending", window_s=10.0, pending=0),
        pace("past-deadline", window_s=60.0, created_at=T0 - 120),
    ]
    backoffs = {"backing-off": Backoff(1, T0 + 5), "early": Backoff(3, T0 - 1)}
    assert lease_order(backlog, backoffs, T0) == ["early", "late-deadline"]
    assert lease_order(backlog, backoffs, T0 + 5) == ["backing-off", "early", "late-deadline"]


@pytest.mark.parametrize(
    ("remaining", "seconds_left", "peak", "tier"),
    [
        (10_000, 86_000, 10.0, ServiceTier.FLEX),  # 1,000 s needed, a day left
        (10_000, 6_400, 10.0, ServiceTier.FLEX),  # needs 1,000 s: > 2 x 1,000 s + 4,320 s
        (10_000, 6_200, 10.0, ServiceTier.DEFAULT),  # < 2 x what it needs + the guard
        (10_000, 86_000, 0.1, ServiceTier.DEFAULT),  # 100,000 s needed at its best pace
        (10_000, 80_000, None, ServiceTier.FLEX),  # no pace yet: only the guard applies
        (10_000, 4_000, None, ServiceTier.DEFAULT),  # last 5 % of the window
        (1, 4_000, 10.0, ServiceTier.DEFAULT),
        (0, 10, None, ServiceTier.FLEX),
    ],
)
def test_the_escalation_rule(
    remaining: int, seconds_left: float, peak: float | None, tier: ServiceTier
) -> None:
    batch = pace(total=remaining, window_s=86_400.0)
    now = batch.expires_at - seconds_left
    assert service_tier(batch, now, peak_rate=peak, escalated=False) is tier


def test_escalation_is_monotone() -> None:
    batch = pace(total=10)
    assert service_tier(batch, T0, peak_rate=100.0, escalated=True) is ServiceTier.DEFAULT


def test_the_rate_meter_reports_a_pace_once_it_has_one() -> None:
    meter = RateMeter(window_s=10.0)
    assert meter.rate(T0) is None
    for i in range(4):
        meter.observe(T0 + i * 0.5)
    assert meter.rate(T0 + 1.5) is None and meter.peak is None  # too few lines
    for i in range(4, 40):
        meter.observe(T0 + i * 0.5)  # 2 lines/s for 20 s
    assert meter.rate(T0 + 19.5) == pytest.approx(2.0, rel=0.06)
    assert meter.peak is not None and meter.peak >= 2.0
    peak = meter.peak
    assert meter.rate(T0 + 100) is None  # nothing lately
    assert meter.peak == peak  # the best pace is remembered
