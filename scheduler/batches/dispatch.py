"""The batch dispatcher's loop: lease lines, send each through the gateway, commit its answer,
renew leases, settle batches. At-least-once execution, exactly-once results.

The edge around ``pacing``: every decision is made there, every side effect happens here. Store
calls block on disk, so they run in worker threads; the gateway is reached through a
``LineSender`` (``dispatch_http.GatewaySender``; tests use fakes). One round runs every
``TICK_S``, or as soon as a line finishes:

1. every ``settle_s``: settle due batches (``Finalizer.advance``: completed, cancelled, expired)
   in a task of its own, so writing a big batch's files does not hold up the heartbeats;
2. every ``heartbeat_s``: renew the leases of lines in flight; a line whose lease is gone (its
   batch expired, or the lease ran out while this worker stalled) is abandoned, since its
   answer would not be kept;
3. every ``backlog_s``: re-read the backlog (``dispatch_backlog``);
4. lease up to ``pacing.in_flight_target`` lines from batches in ``pacing.lease_order`` and send
   each with its batch's ``pacing.service_tier``.

Each line's task judges its answer (``pacing.judge``) and commits the result (lines answered
together share one transaction: ``dispatch_commit``) or releases the lease.

Cancel: a cancelling batch leases no new line (the store's rule); its lines in flight finish
and are kept; the store settles the others as ``batch_cancelled`` once none is in flight.
Expiry: ``advance`` settles a batch past its deadline (``batch_expired``) and its lines still
in flight lose their leases. Shutdown (``stop``): requests in flight are abandoned and their
leases released, so the next worker runs them at once rather than after the leases run out.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from scheduler.batches.dispatch_backlog import Backlog
from scheduler.batches.dispatch_commit import GroupCommit
from scheduler.batches.leases import LineKey
from scheduler.batches.objects import (
    BatchRecord,
    LeasedLine,
    LineError,
    LineResponse,
    LineResult,
    attempts_exhausted,
)
from scheduler.batches.pacing import (
    BACKOFF_BASE_S,
    Backoff,
    BatchPace,
    RateMeter,
    Verdict,
    Window,
    back_off,
    in_flight_target,
    judge,
    lease_order,
    service_tier,
)
from scheduler.batches.store import BatchStore
from scheduler.config import BatchConfig
from scheduler.types import ServiceTier

log = logging.getLogger(__name__)

TICK_S = 0.1
"""Longest wait between rounds (a finishing line starts the next one at once)."""
PROGRESS_LOG_S = 30.0


@dataclass(frozen=True, slots=True)
class Answer:
    """What the gateway said about one line."""

    status: int | None
    """HTTP status; None when no answer came (see ``timed_out``)."""
    body: Any = None
    """The JSON body (a non-JSON body arrives wrapped in an OpenAI error envelope)."""
    request_id: str = ""
    accelerator: str | None = None
    """Which accelerator type served it (``x-gearshift-accelerator``)."""
    retry_after_s: float | None = None
    timed_out: bool = False
    """No answer because the line took longer than the worker waits (counts as an attempt);
    otherwise no answer means the gateway was unreachable or hung up (does not count)."""
    detail: str = ""


class LineSender(Protocol):
    """Sends one line to the gateway's public endpoint; never raises for HTTP or network
    trouble (that is an ``Answer``)."""

    async def send(self, line: LeasedLine, tier: ServiceTier) -> Answer: ...


@dataclass(frozen=True, slots=True)
class DispatchSettings:
    worker_id: str
    heartbeat_s: float
    max_attempts: int
    max_in_flight: int = 64
    settle_s: float = 0.5
    backlog_s: float = 0.5
    backoff_base_s: float = BACKOFF_BASE_S

    @classmethod
    def from_config(
        cls, config: BatchConfig, worker_id: str, max_in_flight: int | None = None
    ) -> DispatchSettings:
        """Settings from ``config``; ``max_in_flight`` overrides ``config.max_in_flight``."""
        return cls(
            worker_id=worker_id,
            heartbeat_s=config.heartbeat_s,
            max_attempts=config.max_attempts,
            max_in_flight=config.max_in_flight if max_in_flight is None else max_in_flight,
            settle_s=min(0.5, config.heartbeat_s),
        )


@dataclass(slots=True)
class _Batch:
    """What this worker learnt about one batch since it started."""

    meter: RateMeter = field(default_factory=RateMeter)
    escalated: bool = False
    backoff: Backoff | None = None
    served_by: Counter[str] = field(default_factory=Counter)
    """Lines with a 2xx answer this worker recorded, per accelerator type."""


class Dispatcher:
    """Runs the lines of every ``in_progress`` batch until ``stop`` is set."""

    def __init__(
        self,
        store: BatchStore,
        backlog: Backlog,
        sender: LineSender,
        settings: DispatchSettings,
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self._store = store
        self._backlog_reader = backlog
        self._sender = sender
        self._settings = settings
        self._clock = clock
        self._rng = rng or random.Random()
        self._window = Window()
        self._backlog: list[BatchPace] = []
        self._batches: dict[str, _Batch] = {}
        self._tasks: dict[LineKey, asyncio.Task[None]] = {}
        self._answered: set[LineKey] = set()
        """Lines past their HTTP request (committing or releasing): never abandoned."""
        self._wake = asyncio.Event()
        self._commit = GroupCommit(store.leases, clock)
        self._settling: asyncio.Task[None] | None = None
        """Settling runs beside the rounds: writing a big batch's files must not hold up
        heartbeats."""
        self._due = {"settle": 0.0, "heartbeat": 0.0, "backlog": 0.0, "progress": 0.0}
        self.recorded = 0
        """Results this worker committed (the first for their line)."""
        self.served_by: Counter[str] = Counter()
        """Lines with a 2xx answer this worker recorded, per accelerator type."""

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    @property
    def transactions(self) -> int:
        """Transactions that committed results (fewer than results: group commit)."""
        return self._commit.transactions

    async def run(self, stop: asyncio.Event) -> None:
        log.info("batch dispatcher %s running", self._settings.worker_id)
        committer = asyncio.create_task(self._commit.run())
        try:
            while not stop.is_set():
                await self._round(self._clock())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), TICK_S)
                self._wake.clear()
        finally:
            await self._shutdown(committer)

    async def _round(self, now: float) -> None:
        settings = self._settings
        idle = self._settling is None or self._settling.done()
        if idle and self._take("settle", now, settings.settle_s):
            self._settling = asyncio.create_task(self._settle(now))
        if self._take("heartbeat", now, settings.heartbeat_s):
            await self._heartbeat(now)
        if self._take("backlog", now, settings.backlog_s):
            self._backlog = await asyncio.to_thread(self._backlog_reader.read, now)
            self._forget_settled()
        if self._take("progress", now, PROGRESS_LOG_S) and (self._tasks or self._backlog):
            log.info(
                "%d lines in flight (window %.1f), %d batches with work, %d results so far; "
                "served by %s",
                len(self._tasks),
                self._window.size,
                len(self._backlog),
                self.recorded,
                dict(self.served_by) or "-",
            )
        await self._lease(now)

    def _forget_settled(self) -> None:
        """Drop what we knew of batches that left ``in_progress`` with no line of ours in
        flight (cancelled or settled elsewhere; those we settle are reported first)."""
        keep = {pace.batch_id for pace in self._backlog} | {key[0] for key in self._tasks}
        for batch_id in [b for b in self._batches if b not in keep]:
            del self._batches[batch_id]

    def _take(self, what: str, now: float, every_s: float) -> bool:
        if now < self._due[what]:
            return False
        self._due[what] = now + every_s
        return True

    # ------------------------------------------------------------------------ leasing

    async def _lease(self, now: float) -> None:
        target = in_flight_target(
            self._window, self._backlog, now, limit=self._settings.max_in_flight
        )
        free = target - len(self._tasks)
        if free <= 0:
            return
        backoffs = {
            batch_id: batch.backoff
            for batch_id, batch in self._batches.items()
            if batch.backoff is not None
        }
        for batch_id in lease_order(self._backlog, backoffs, now):
            lines = await asyncio.to_thread(
                self._store.leases.lease_lines,
                self._settings.worker_id,
                free,
                now=now,
                batch_id=batch_id,
            )
            pace = self._pace(batch_id, leased=len(lines), exhausted=len(lines) < free)
            if not lines:
                continue
            tier = ServiceTier.FLEX if pace is None else self._tier(pace, now)
            for line in lines:
                self._start(line, tier)
            free -= len(lines)
            if free <= 0:
                return

    def _pace(self, batch_id: str, *, leased: int, exhausted: bool) -> BatchPace | None:
        """The batch's backlog entry, less the lines just leased (none left if the store had
        fewer than asked for)."""
        for index, pace in enumerate(self._backlog):
            if pace.batch_id == batch_id:
                pending = 0 if exhausted else max(0, pace.pending - leased)
                self._backlog[index] = replace(pace, pending=pending)
                return pace
        return None

    def _tier(self, pace: BatchPace, now: float) -> ServiceTier:
        batch = self._batch(pace.batch_id)
        tier = service_tier(pace, now, peak_rate=batch.meter.peak, escalated=batch.escalated)
        if tier is ServiceTier.DEFAULT and not batch.escalated:
            batch.escalated = True
            log.warning(
                "batch %s: %d lines left and %.0f s to its deadline (best pace %s lines/s): "
                "its lines now go as service_tier default (standard class)",
                pace.batch_id,
                pace.remaining,
                pace.seconds_left(now),
                f"{batch.meter.peak:.2f}" if batch.meter.peak else "unknown",
            )
        return tier

    def _batch(self, batch_id: str) -> _Batch:
        batch = self._batches.get(batch_id)
        if batch is None:
            batch = self._batches[batch_id] = _Batch()
        return batch

    def _start(self, line: LeasedLine, tier: ServiceTier) -> None:
        stale = self._tasks.get(line.key)
        if stale is not None:  # its lease ran out before a heartbeat and we leased it again
            stale.cancel()
            self._answered.discard(line.key)
        task = asyncio.create_task(self._run_line(line, tier))
        self._tasks[line.key] = task
        task.add_done_callback(functools.partial(self._finished, line.key))

    def _finished(self, key: LineKey, task: asyncio.Task[None]) -> None:
        if self._tasks.get(key) is task:
            del self._tasks[key]
            self._answered.discard(key)
        self._wake.set()

    # -------------------------------------------------------------------------- lines

    async def _run_line(self, line: LeasedLine, tier: ServiceTier) -> None:
        loop = asyncio.get_running_loop()
        try:
            sent = loop.time()
            answer = await self._sender.send(line, tier)
            latency_s = loop.time() - sent
            self._answered.add(line.key)
            await self._settle_line(line, answer, latency_s)
        except Exception:  # a bug must not stop every other line: log it, run the line again
            log.exception("line %s#%d failed in the dispatcher; released", *line.key)
            with contextlib.suppress(Exception):
                await asyncio.to_thread(
                    self._store.leases.release,
                    self._settings.worker_id,
                    [line.key],
                    count_attempt=True,
                )

    async def _settle_line(self, line: LeasedLine, answer: Answer, latency_s: float) -> None:
        verdict = judge(
            answer.status,
            timed_out=answer.timed_out,
            attempts=line.attempts,
            max_attempts=self._settings.max_attempts,
        )
        batch = self._batch(line.batch_id)
        now = self._clock()
        if verdict in (Verdict.RECORD, Verdict.GIVE_UP):
            response, error = _result(line, answer)
            result = LineResult(line.batch_id, line.line_no, response, error)
            recorded = await self._commit.commit(result)
            if verdict is Verdict.RECORD:
                self._window = self._window.answered(latency_s, limit=self._settings.max_in_flight)
                batch.backoff = None
            else:
                self._window = self._window.refused(now)
                log.info(
                    "line %s#%d failed on its last attempt (%s); recorded as an error",
                    *line.key,
                    answer.status or answer.detail,
                )
            if not recorded:
                log.debug("line %s#%d already had its result; answer dropped", *line.key)
                return
            self.recorded += 1
            batch.meter.observe(now)
            if response is not None and response.ok and answer.accelerator:
                batch.served_by[answer.accelerator] += 1
                self.served_by[answer.accelerator] += 1
            return
        await asyncio.to_thread(
            self._store.leases.release,
            self._settings.worker_id,
            [line.key],
            count_attempt=verdict is Verdict.RETRY,
        )
        batch.backoff = back_off(
            batch.backoff,
            now,
            answer.retry_after_s,
            self._rng,
            base_s=self._settings.backoff_base_s,
        )
        if verdict is Verdict.RETRY or answer.status == 503:
            self._window = self._window.refused(now)
        log.debug(
            "line %s#%d: %s (%s); batch backs off %.1f s",
            *line.key,
            verdict.value,
            answer.status or answer.detail,
            batch.backoff.until - now,
        )

    # ---------------------------------------------------------------- leases, settling

    async def _heartbeat(self, now: float) -> None:
        keys = [key for key in self._tasks if key not in self._answered]
        if not keys:
            return
        held = await asyncio.to_thread(
            self._store.leases.heartbeat, self._settings.worker_id, keys, now=now
        )
        for key in keys:
            task = self._tasks.get(key)
            if key not in held and task is not None and key not in self._answered:
                log.info("line %s#%d lost its lease (batch settled or lease ran out)", *key)
                task.cancel()

    async def _settle(self, now: float) -> None:
        try:
            settled = await asyncio.to_thread(self._store.finalizer.advance, now=now)
        except Exception:  # e.g. a full disk while writing a file: the next round retries
            log.exception("settling batches failed; retrying")
            return
        for record in settled:
            self._report(record)

    def _report(self, record: BatchRecord) -> None:
        batch = self._batches.pop(record.id, None)
        served = dict(batch.served_by) if batch is not None else {}
        counts = record.counts
        log.info(
            "batch %s %s: %d of %d lines completed, %d failed; this worker's lines were "
            "served by %s",
            record.id,
            record.status.value,
            counts.completed,
            counts.total,
            counts.failed,
            served or "-",
        )

    async def _shutdown(self, committer: asyncio.Task[None]) -> None:
        """Abandon the lines in flight, commit the answers already in, release the rest."""
        tasks = dict(self._tasks)
        for task in tasks.values():
            task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
        committer.cancel()
        await asyncio.gather(committer, return_exceptions=True)
        await self._commit.flush()
        if self._settling is not None:
            await asyncio.gather(self._settling, return_exceptions=True)
        if tasks:
            released = await asyncio.to_thread(
                self._store.leases.release, self._settings.worker_id, list(tasks)
            )
            log.info("stopping: released %d leased lines", released)


def _result(line: LeasedLine, answer: Answer) -> tuple[LineResponse | None, LineError | None]:
    """The line's result: the gateway's answer, or (no answer on its last attempt) an error."""
    if answer.status is None:
        return None, attempts_exhausted(line.attempts)
    return LineResponse(answer.status, answer.request_id, answer.body), None
