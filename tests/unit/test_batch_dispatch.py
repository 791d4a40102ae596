"""The dispatcher's loop (``scheduler.batches.dispatch``) over a real store on disk and a fake
gateway (a ``LineSender``): one result per line, "not now" released without counting, capped
retries, cancellation with lines in flight, expiry, escalation near the deadline, shutdown and
resuming a dead worker's lines. Store time is wall time plus an offset the tests move."""

from __future__ import annotations

import asyncio
import io
import json
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from scheduler.batches import (
    BatchRecord,
    BatchStatus,
    BatchStore,
    LeasedLine,
    LineResponse,
    ObjectNotFound,
    Purpose,
)
from scheduler.batches.dispatch import Answer, Dispatcher, DispatchSettings
from scheduler.batches.dispatch_backlog import Backlog
from scheduler.batches.dispatch_commit import GroupCommit
from scheduler.batches.objects import LineResult
from scheduler.config import BatchConfig
from scheduler.types import ServiceTier

pytestmark = pytest.mark.timeout(60)

URL = "/v1/chat/completions"
EXPIRED = "This request could not be executed before the completion window expired."


class Clock:
    """Wall time plus ``offset`` (the tests jump ahead by raising it)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


class FakeGateway:
    """A ``LineSender``: ``answer(line, tier, calls)`` decides each answer; ``hold`` blocks the
    lines it names until ``release``."""

    def __init__(self, answer: Callable[[LeasedLine, ServiceTier, int], Answer] | None = None):
        self.answer = answer or (lambda line, tier, calls: ok(line))
        self.calls: Counter[str] = Counter()
        self.tiers: list[ServiceTier] = []
        self.in_flight: set[str] = set()
        self.abandoned: set[str] = set()
        self.hold: Callable[[LeasedLine], bool] = lambda line: False
        self.released = asyncio.Event()

    async def send(self, line: LeasedLine, tier: ServiceTier) -> Answer:
        self.calls[line.custom_id] += 1
        self.tiers.append(tier)
        self.in_flight.add(line.custom_id)
        try:
            if self.hold(line):
                await self.released.wait()
            await asyncio.sleep(0.001)
            return self.answer(line, tier, self.calls[line.custom_id])
        except asyncio.CancelledError:
            self.abandoned.add(line.custom_id)
            raise
        finally:
            self.in_flight.discard(line.custom_id)


def ok(line: LeasedLine) -> Answer:
    body = {"object": "chat.completion", "choices": [{"message": {"content": line.custom_id}}]}
    return Answer(200, body, f"req-{line.line_no}", "A100-80GB")


def jsonl(n: int) -> bytes:
    return b"".join(
        json.dumps(
            {
                "custom_id": f"req-{i}",
                "method": "POST",
                "url": URL,
                "body": {"model": "m", "messages": [{"role": "user", "content": str(i)}]},
            }
        ).encode()
        + b"\n"
        for i in range(n)
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[BatchStore]:
    config = BatchConfig(store_path=str(tmp_path), lease_s=5, heartbeat_s=0.2, max_attempts=3)
    opened = BatchStore.open(config, mounts="")
    yield opened
    opened.close()


def start(store: BatchStore, n: int, *, now: float, window_s: float = 86_400.0) -> BatchRecord:
    file = store.create_file("acme", "in.jsonl", Purpose.BATCH, io.BytesIO(jsonl(n)), now=now)
    batch = store.create_batch(
        "acme",
        input_file_id=file.id,
        endpoint=URL,
        completion_window=f"{int(window_s)}s",
        window_s=window_s,
        metadata=None,
        now=now,
    )
    return store.validate_batch(batch.id, lambda endpoint, body: "m", now=now)


def dispatcher(
    store: BatchStore, gateway: FakeGateway, clock: Clock, max_in_flight: int = 8
) -> Dispatcher:
    settings = DispatchSettings.from_config(store.config, "worker-1", max_in_flight)
    settings = replace(settings, backoff_base_s=0.02)
    return Dispatcher(store, Backlog.open(store), gateway, settings, clock=clock)


@asynccontextmanager
async def running(worker: Dispatcher) -> AsyncIterator[asyncio.Event]:
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        yield stop
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def until(predicate: Callable[[], Any], what: str, timeout_s: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def terminal(store: BatchStore, batch_id: str) -> Callable[[], BatchRecord | None]:
    def check() -> BatchRecord | None:
        batch = store.batch(batch_id)
        return batch if batch.status.terminal else None

    return check


def lines_of(store: BatchStore, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    _, handle = store.open_content("acme", file_id)
    with handle:
        return [json.loads(row) for row in handle.read().splitlines()]


def attempts(store: BatchStore, batch_id: str) -> dict[int, int]:
    with sqlite3.connect(store.root / "batch.sqlite3") as db:
        rows = db.execute("SELECT line_no, attempts FROM lines WHERE batch_id = ?", (batch_id,))
        return dict(rows.fetchall())


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(test())


def test_the_in_flight_ceiling_comes_from_the_config_unless_overridden() -> None:
    config = BatchConfig(max_in_flight=12)
    assert DispatchSettings.from_config(config, "w").max_in_flight == 12
    assert DispatchSettings.from_config(config, "w", max_in_flight=3).max_in_flight == 3
    assert DispatchSettings.from_config(BatchConfig(), "w").max_in_flight == 64


def test_every_line_gets_exactly_one_result_and_the_batch_completes(store: BatchStore) -> None:
    def answer(line: LeasedLine, tier: ServiceTier, calls: int) -> Answer:
        if line.line_no % 10 == 0:  # the engine refuses it: the line's error result
            body = {"error": {"message": "bad", "type": "invalid_request_error"}}
            return Answer(400, body, "req-bad", "A100-80GB")
        return ok(line)

    async def test() -> None:
        clock = Clock()
        batch = start(store, 50, now=clock())
        gateway = FakeGateway(answer)
        worker = dispatcher(store, gateway, clock)
        async with running(worker):
            done = await until(terminal(store, batch.id), "the batch to complete")
        assert done.status is BatchStatus.COMPLETED
        assert (done.counts.total, done.counts.completed, done.counts.failed) == (50, 45, 5)
        output, errors = lines_of(store, done.output_file_id), lines_of(store, done.error_file_id)
        ids = [row["custom_id"] for row in output + errors]
        assert sorted(ids) == sorted(f"req-{i}" for i in range(50))
        assert {row["response"]["status_code"] for row in errors} == {400}
        for row in output:  # each line's own answer
            assert row["response"]["body"]["choices"][0]["message"]["content"] == row["custom_id"]
        assert set(gateway.tiers) == {ServiceTier.FLEX}  # a day to go: the batch class
        assert worker.served_by == Counter({"A100-80GB": 45})
        assert max(gateway.calls.values()) == 1
        assert worker.recorded == 50 and worker.transactions < 50  # group commit

    run(test)


def test_not_now_releases_the_line_without_counting_an_attempt(store: BatchStore) -> None:
    def answer(line: LeasedLine, tier: ServiceTier, calls: int) -> Answer:
        if calls <= 2:
            return Answer(503, {"error": {"code": "queue_full"}}, retry_after_s=0.01)
        if calls == 3 and line.custom_id == "req-1":
            return Answer(None, detail="gateway unreachable")
        return ok(line)

    async def test() -> None:
        clock = Clock()
        batch = start(store, 6, now=clock())
        gateway = FakeGateway(answer)
        async with running(dispatcher(store, gateway, clock)):
            done = await until(terminal(store, batch.id), "the batch to complete")
        assert done.counts.completed == 6
        assert gateway.calls["req-1"] == 4 and gateway.calls["req-2"] == 3
        assert set(attempts(store, batch.id).values()) == {1}  # only the lease that answered

    run(test)


def test_engine_failures_are_retried_then_recorded_on_the_last_attempt(store: BatchStore) -> None:
    def answer(line: LeasedLine, tier: ServiceTier, calls: int) -> Answer:
        if line.custom_id == "req-3":  # a poison line: the engine fails every time
            return Answer(502, {"error": {"message": "engine died", "code": "upstream_error"}})
        if line.custom_id == "req-4":
            return Answer(None, timed_out=True, detail="no answer in time")
        if line.custom_id == "req-5" and calls == 1:
            return Answer(500, {"error": {"message": "oops"}})
        return ok(line)

    async def test() -> None:
        clock = Clock()
        batch = start(store, 8, now=clock())
        gateway = FakeGateway(answer)
        async with running(dispatcher(store, gateway, clock)):
            done = await until(terminal(store, batch.id), "the batch to complete", 40)
        assert (done.counts.completed, done.counts.failed) == (6, 2)
        assert gateway.calls["req-3"] == 3 and gateway.calls["req-4"] == 3  # max_attempts
        assert gateway.calls["req-5"] == 2
        errors = {row["custom_id"]: row for row in lines_of(store, done.error_file_id)}
        assert errors["req-3"]["response"]["status_code"] == 502
        assert errors["req-4"]["response"] is None
        assert errors["req-4"]["error"]["code"] == "attempts_exhausted"

    run(test)


def test_cancel_lets_lines_in_flight_finish_and_starts_no_new_line(store: BatchStore) -> None:
    async def test() -> None:
        clock = Clock()
        batch = start(store, 40, now=clock())
        gateway = FakeGateway()
        gateway.hold = lambda line: True
        async with running(dispatcher(store, gateway, clock, max_in_flight=4)):
            await until(lambda: len(gateway.in_flight) == 4, "four lines in flight")
            cancelling = store.cancel_batch("acme", batch.id, now=clock())
            assert cancelling.status is BatchStatus.CANCELLING
            await asyncio.sleep(0.5)  # several rounds: nothing new may start
            assert sum(gateway.calls.values()) == 4
            assert store.batch(batch.id).status is BatchStatus.CANCELLING
            started = set(gateway.calls)
            gateway.released.set()
            done = await until(terminal(store, batch.id), "the batch to be cancelled")
        assert done.status is BatchStatus.CANCELLED
        assert sum(gateway.calls.values()) == 4 and not gateway.abandoned
        output, errors = lines_of(store, done.output_file_id), lines_of(store, done.error_file_id)
        assert {row["custom_id"] for row in output} == started  # in flight: finished and kept
        assert len(errors) == 36
        assert {row["error"]["code"] for row in errors} == {"batch_cancelled"}
        assert (done.counts.completed, done.counts.failed) == (4, 36)

    run(test)


def test_expiry_through_the_dispatcher(store: BatchStore) -> None:
    async def test() -> None:
        clock = Clock()
        batch = start(store, 30, now=clock(), window_s=60.0)
        gateway = FakeGateway()
        gateway.hold = lambda line: line.line_no > 5
        async with running(dispatcher(store, gateway, clock, max_in_flight=4)):
            await until(lambda: len(gateway.in_flight) == 4, "four lines held in flight")
            assert store.batch(batch.id).counts.completed == 5
            clock.offset = 61.0  # the completion window passes
            done = await until(terminal(store, batch.id), "the batch to expire")
            await until(lambda: not gateway.in_flight, "lines in flight to be abandoned")
        assert done.status is BatchStatus.EXPIRED
        assert gateway.abandoned and gateway.abandoned <= {f"req-{i}" for i in range(5, 30)}
        output, errors = lines_of(store, done.output_file_id), lines_of(store, done.error_file_id)
        assert sorted(row["custom_id"] for row in output) == [f"req-{i}" for i in range(5)]
        assert len(errors) == 25
        assert {(row["error"]["code"], row["error"]["message"]) for row in errors} == {
            ("batch_expired", EXPIRED)
        }
        assert sum(gateway.calls.values()) == 9  # nothing started after the deadline

    run(test)


def test_lines_go_as_default_tier_once_the_slack_is_low(store: BatchStore) -> None:
    async def test() -> None:
        clock = Clock()
        batch = start(store, 5, now=clock(), window_s=100.0)
        clock.offset = 96.0  # the last 5 % of the window
        gateway = FakeGateway()
        async with running(dispatcher(store, gateway, clock)):
            done = await until(terminal(store, batch.id), "the batch to complete")
        assert done.status is BatchStatus.COMPLETED
        assert set(gateway.tiers) == {ServiceTier.DEFAULT}

    run(test)


def test_stop_releases_the_leases_of_lines_in_flight(store: BatchStore) -> None:
    async def test() -> None:
        clock = Clock()
        batch = start(store, 10, now=clock())
        gateway = FakeGateway()
        gateway.hold = lambda line: True
        async with running(dispatcher(store, gateway, clock, max_in_flight=4)):
            await until(lambda: len(gateway.in_flight) == 4, "four lines in flight")
        assert len(gateway.abandoned) == 4
        assert store.leases.line_states(batch.id) == {"pending": 10, "leased": 0, "done": 0}
        assert set(attempts(store, batch.id).values()) == {0}

    run(test)


def test_a_new_worker_runs_the_lines_a_dead_one_held(store: BatchStore) -> None:
    async def test() -> None:
        clock = Clock()
        batch = start(store, 12, now=clock())
        dead = store.leases.lease_lines("dead-worker", 5, now=clock(), lease_s=1.0)
        gateway = FakeGateway()
        async with running(dispatcher(store, gateway, clock)):
            await until(lambda: store.batch(batch.id).counts.completed == 7, "the free lines")
            assert not {line.custom_id for line in dead} & set(gateway.calls)
            clock.offset = 2.0  # the dead worker's leases run out
            done = await until(terminal(store, batch.id), "the batch to complete")
        assert done.counts.completed == 12
        assert {line.custom_id for line in dead} <= set(gateway.calls)
        assert {attempts(store, batch.id)[line.line_no] for line in dead} == {2}

    run(test)


def test_group_commit_shares_transactions_and_isolates_a_bad_line(store: BatchStore) -> None:
    async def test() -> None:
        clock = Clock()
        batch = start(store, 6, now=clock())
        commit = GroupCommit(store.leases, clock)
        response = LineResponse(200, "req", {"ok": True})
        results = [LineResult(batch.id, n, response) for n in range(1, 6)]
        runner = asyncio.create_task(commit.run())
        try:
            first = await asyncio.gather(*(commit.commit(result) for result in results))
            assert first == [True] * 5 and commit.transactions == 1  # one group, one fsync
            again = commit.commit(results[0])
            unknown = commit.commit(LineResult(batch.id, 99, response))
            last = commit.commit(LineResult(batch.id, 6, response))
            outcomes = await asyncio.gather(again, unknown, last, return_exceptions=True)
        finally:
            runner.cancel()
        assert outcomes[0] is False  # the line had its result: kept once
        assert isinstance(outcomes[1], ObjectNotFound)
        assert outcomes[2] is True  # committed on its own after the group failed
        assert store.batch(batch.id).counts.completed == 6

    run(test)
