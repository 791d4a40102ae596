"""The batch dispatcher's decisions, pure: what a gateway answer means for a line, how many lines
to have in flight, which batches to lease from, how long to back off, and which service tier a
batch's lines are sent with.

No I/O, no clock, no global state: ``now`` (unix seconds) and the RNG are passed in;
``dispatch.Dispatcher`` performs what this module decides. What the gateway's answer for a line
means (``judge``):

=============================  ========  ==================================================
answer                         verdict   the dispatcher
=============================  ========  ==================================================
2xx                            RECORD    commits it as the line's result (output file)
4xx other than 429             RECORD    commits it as the line's result (error file)
429, 503, gateway unreachable  NOT_NOW   releases the lease (the attempt does not count),
                                         backs the batch off; 503 also halves the window
other 5xx, timed out           RETRY     releases the lease (the attempt counts), backs off,
                                         halves the window
... on the line's last attempt GIVE_UP   commits the last answer as the line's error result
=============================  ========  ==================================================
"""

from __future__ import annotations

import enum
import math
import random
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from scheduler.types import ServiceTier

INITIAL_WINDOW = 4.0
"""Lines in flight before the gateway has answered any."""
DECREASE = 0.5
"""The window's factor on a 503 or a failed line (multiplicative decrease)."""
LATENCY_WEIGHT = 0.1
"""Weight of the newest answer in the latency average."""
BASELINE_DRIFT = 0.001
"""How fast the latency baseline forgets a low (per answer): it doubles in ~700 answers."""
QUEUEING = 2.0
"""Answers slower than this many times the baseline mean the gateway is queueing our lines:
the window stops growing (spare capacity is used up) until they speed up again."""
FLOOR_HEADROOM = 1.25
"""Lines in flight kept above the deadline's need (Little's law: rate x latency)."""
BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 30.0
RATE_WINDOW_S = 10.0
"""A batch's pace is the lines it finished over this many seconds."""
RATE_MIN_LINES = 5
SAFETY = 2.0
"""A batch escalates once it has less than this many times the time its rest needs."""
GUARD = 0.05
"""The last 5 % of every completion window escalates whatever the pace."""


class Verdict(enum.StrEnum):
    RECORD = "record"
    NOT_NOW = "not_now"
    RETRY = "retry"
    GIVE_UP = "give_up"


def judge(status: int | None, *, timed_out: bool, attempts: int, max_attempts: int) -> Verdict:
    """What the answer for a line means (table in the module docstring). ``status`` None: no
    HTTP answer, either because the gateway could not be reached or dropped the connection
    (not the line's fault) or, with ``timed_out``, because the line took too long."""
    if status is None and not timed_out:
        return Verdict.NOT_NOW
    if status is not None and 200 <= status < 300:
        return Verdict.RECORD
    if status in (429, 503):
        return Verdict.NOT_NOW
    if status is not None and 400 <= status < 500:
        return Verdict.RECORD
    return Verdict.GIVE_UP if attempts >= max_attempts else Verdict.RETRY


@dataclass(frozen=True, slots=True)
class Backoff:
    """A batch refused ``failures`` times in a row; no line of it is leased before ``until``."""

    failures: int
    until: float


def back_off(
    previous: Backoff | None,
    now: float,
    retry_after_s: float | None,
    rng: random.Random,
    *,
    base_s: float = BACKOFF_BASE_S,
) -> Backoff:
    """The next back-off: exponential from ``base_s`` to ``BACKOFF_MAX_S`` with equal
    jitter (half fixed, half random, so workers do not retry in step), never shorter than the
    gateway's ``Retry-After`` (itself capped at ``BACKOFF_MAX_S``). A refusal during a back-off
    (for a line sent before it began) leaves it as it is: one burst counts once."""
    if previous is not None and now < previous.until:
        return previous
    failures = (previous.failures if previous else 0) + 1
    ceiling = min(BACKOFF_MAX_S, base_s * 2.0 ** (failures - 1))
    delay = ceiling / 2 + rng.uniform(0.0, ceiling / 2)
    if retry_after_s is not None and retry_after_s > 0:
        delay = max(delay, min(retry_after_s, BACKOFF_MAX_S))
    return Backoff(failures, now + delay)


@dataclass(frozen=True, slots=True)
class Window:
    """How many lines to keep in flight, from the answers so far (AIMD, held while queueing).

    Additive increase: +1 line per window's worth of answers, while answers come back no
    slower than ``QUEUEING`` x the baseline (the lowest latency average, slowly forgotten).
    When they are slower, the gateway is holding our lines in its batch queue: the spare
    capacity is used up, so the window holds. Multiplicative decrease on 503 and failures, at
    most once per latency (the lines of one window that all meet the same full gateway count
    as one signal).
    """

    size: float = INITIAL_WINDOW
    latency_s: float | None = None
    """Moving average of answered lines' latency."""
    baseline_s: float | None = None
    decreased_at: float | None = None

    @property
    def queueing(self) -> bool:
        if self.latency_s is None or self.baseline_s is None:
            return False
        return self.latency_s > QUEUEING * self.baseline_s

    def answered(self, latency_s: float, *, limit: int) -> Window:
        """After a line's answer (``RECORD``) that took ``latency_s``."""
        average = (
            latency_s
            if self.latency_s is None
            else (1 - LATENCY_WEIGHT) * self.latency_s + LATENCY_WEIGHT * latency_s
        )
        baseline = (
            average
            if self.baseline_s is None
            else min(average, self.baseline_s * (1 + BASELINE_DRIFT))
        )
        grown = replace(self, latency_s=average, baseline_s=baseline)
        if grown.queueing:
            return replace(grown, size=min(self.size, float(limit)))
        return replace(grown, size=min(float(limit), self.size + 1 / self.size))

    def refused(self, now: float) -> Window:
        """After a 503 (no capacity now) or a failed line, at ``now``."""
        since = None if self.decreased_at is None else now - self.decreased_at
        if since is not None and since < (self.latency_s or 0.0):
            return self
        return replace(self, size=max(1.0, self.size * DECREASE), decreased_at=now)


@dataclass(frozen=True, slots=True)
class BatchPace:
    """One ``in_progress`` batch as the dispatcher schedules it."""

    batch_id: str
    created_at: float
    expires_at: float
    total: int
    done: int
    """Lines with a result."""
    pending: int
    """Lines no worker holds."""

    @property
    def remaining(self) -> int:
        return self.total - self.done

    @property
    def window_s(self) -> float:
        return self.expires_at - self.created_at

    def seconds_left(self, now: float) -> float:
        return self.expires_at - now


def required_rate(backlog: Sequence[BatchPace], now: float) -> float:
    """Lines per second needed for every batch to finish by its deadline (a batch in its last
    second counts as having one)."""
    return sum(
        pace.remaining / max(pace.seconds_left(now), 1.0)
        for pace in backlog
        if pace.remaining > 0 and pace.seconds_left(now) > 0
    )


def in_flight_target(
    window: Window, backlog: Sequence[BatchPace], now: float, *, limit: int
) -> int:
    """Lines to keep in flight: the window, raised to what the deadlines need (required rate x
    latency x ``FLOOR_HEADROOM``, Little's law), at most ``limit``, at least 1."""
    floor = 0
    if window.latency_s is not None:
        floor = math.ceil(required_rate(backlog, now) * window.latency_s * FLOOR_HEADROOM)
    return max(1, min(limit, max(int(window.size), floor)))


def lease_order(
    backlog: Sequence[BatchPace], backoffs: Mapping[str, Backoff], now: float
) -> list[str]:
    """The batches to lease lines from, in order: earliest deadline first, skipping those with
    no pending line, past their deadline, or backing off."""
    ready = [
        pace
        for pace in backlog
        if pace.pending > 0
        and pace.seconds_left(now) > 0
        and not (pace.batch_id in backoffs and now < backoffs[pace.batch_id].until)
    ]
    ready.sort(key=lambda pace: pace.expires_at)
    return [pace.batch_id for pace in ready]


def service_tier(
    pace: BatchPace, now: float, *, peak_rate: float | None, escalated: bool
) -> ServiceTier:
    """The tier a batch's next lines are sent with: ``flex`` (class batch: the cheapest
    capacity with headroom, yields to interactive traffic) while the batch is on schedule,
    ``default`` (class standard: admitted ahead of batch) once its slack is low.

    ``projected_s = remaining / peak_rate`` is how long the rest takes at the best pace this
    batch has had: the pace it gets when the fleet has room. Its current pace is no guide: it
    drops to nothing while interactive traffic has the fleet, which is exactly when flex lines
    should wait rather than compete. The batch escalates when

        seconds_left < SAFETY x projected_s + GUARD x window_s

    i.e. with less than twice the time its rest needs at its best pace, waiting for spare
    capacity risks the deadline; and in the last 5 % of its window whatever the pace (which
    also covers a batch that never got a pace). Monotone: an escalated batch stays escalated,
    so it does not flap between classes around the threshold.
    """
    if escalated:
        return ServiceTier.DEFAULT
    if pace.remaining <= 0:
        return ServiceTier.FLEX
    projected_s = pace.remaining / peak_rate if peak_rate else 0.0
    if pace.seconds_left(now) < SAFETY * projected_s + GUARD * pace.window_s:
        return ServiceTier.DEFAULT
    return ServiceTier.FLEX


class RateMeter:
    """Lines one batch finished per second over the last ``RATE_WINDOW_S``, and the best such
    pace seen (``peak``). Times come in; nothing is read from a clock."""

    def __init__(self, window_s: float = RATE_WINDOW_S) -> None:
        self._window_s = window_s
        self._times: deque[float] = deque()
        self._first: float | None = None
        self.peak: float | None = None

    def observe(self, now: float) -> None:
        """One line finished at ``now``."""
        if self._first is None:
            self._first = now
        self._times.append(now)
        rate = self.rate(now)
        if rate is not None and (self.peak is None or rate > self.peak):
            self.peak = rate

    def rate(self, now: float) -> float | None:
        """None until ``RATE_MIN_LINES`` lines over at least a second."""
        while self._times and self._times[0] < now - self._window_s:
            self._times.popleft()
        if self._first is None or len(self._times) < RATE_MIN_LINES:
            return None
        span = min(self._window_s, now - self._first)
        return len(self._times) / span if span >= 1.0 else None
