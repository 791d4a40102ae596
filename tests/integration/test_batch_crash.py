"""At-least-once execution, exactly-once results, through real SIGKILLs: the dispatcher process
(``python -m scheduler.batches.worker``) is killed at seeded random points, 20 times, while it
runs 1,000-line batches against a fake gateway on loopback (latency 10-50 ms, 3 % of requests
refused with 503, every 40th line a 400), and restarted each time.

After the last restart every batch completes with one record per ``custom_id`` across its
output and error files (none lost, none twice), ``request_counts`` that match the files and a
recount of the database, and the gateway executed at most the lines in flight at each kill
more than once. Reliability matrix F2 and F5.
"""

from __future__ import annotations

import random
import signal
import sqlite3
import time
from collections import Counter
from pathlib import Path

import pytest

from scheduler.batches import BatchStatus
from tests.integration.serve_process import wait_for
from tests.integration.test_batch_dispatch import (
    FakeGatewayServer,
    create_batch,
    open_store,
    results,
    start_worker,
    terminal,
    write_config,
)

pytestmark = pytest.mark.timeout(300)

SEED = 20_240_611
KILLS = 20
LINES = 1000
MAX_IN_FLIGHT = 8
LEASE_S = 1.0


def test_sigkill_at_random_points_loses_and_duplicates_no_result(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    print(f"seed {SEED}")
    config = write_config(tmp_path, lease_s=LEASE_S, heartbeat_s=0.2, max_attempts=100)
    store = open_store(config)
    log = tmp_path / "worker.log"
    batches: dict[str, list[str]] = {}

    def new_batch() -> None:
        ids = [
            f"bad-{len(batches)}-{i}" if i % 40 == 0 else f"line-{len(batches)}-{i}"
            for i in range(LINES)
        ]
        batches[create_batch(store, ids).id] = ids

    new_batch()
    started = time.monotonic()
    gateway = FakeGatewayServer(latency_s=(0.01, 0.05), refuse_rate=0.03, seed=SEED)
    with gateway:
        for kill in range(KILLS):
            if all(terminal(store, batch_id) for batch_id in batches):
                new_batch()  # every kill lands while a batch has work
            before = len(gateway.seen)
            worker = start_worker(config, gateway.url, log, max_in_flight=MAX_IN_FLIGHT)
            wait_for(lambda b=before: len(gateway.seen) > b, 30, "the worker to dispatch")
            time.sleep(rng.uniform(0.0, 0.6))
            worker.send_signal(signal.SIGKILL)
            worker.wait(10)
            print(f"kill {kill + 1}: {len(gateway.seen) - before} answers in that run")
        restarted = time.monotonic()
        worker = start_worker(config, gateway.url, log, max_in_flight=MAX_IN_FLIGHT)
        try:
            for batch_id in batches:
                wait_for(lambda b=batch_id: terminal(store, b), LEASE_S + 60, f"{batch_id}")
        finally:
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(20) == 0, log.read_text()[-3000:]
    print(
        f"{len(batches)} batches, {KILLS} kills; {time.monotonic() - started:.0f} s in all, "
        f"{time.monotonic() - restarted:.1f} s to finish after the last restart"
    )

    served = gateway.served()
    rerun = sum(count - 1 for count in served.values())
    print(f"lines executed more than once: {rerun} (bound {KILLS * MAX_IN_FLIGHT})")
    assert rerun <= KILLS * MAX_IN_FLIGHT
    for batch_id, ids in batches.items():
        batch = store.batch(batch_id)
        assert batch.status is BatchStatus.COMPLETED
        output, errors = results(store, batch)
        recorded = Counter(row["custom_id"] for row in output + errors)
        assert set(recorded) == set(ids), "lost results"
        assert max(recorded.values()) == 1, "duplicated results"
        assert {row["custom_id"] for row in errors} == {i for i in ids if i.startswith("bad")}
        assert {row["response"]["status_code"] for row in errors} == {400}
        assert all(row["response"]["status_code"] == 200 for row in output)
        counts = batch.counts
        assert (counts.total, counts.completed, counts.failed) == (LINES, len(output), len(errors))
        assert set(served) >= set(ids)  # every line was executed at least once
        with sqlite3.connect(store.root / "batch.sqlite3") as db:
            recount = db.execute(
                "SELECT COUNT(*), SUM(ok) FROM results WHERE batch_id = ?", (batch_id,)
            ).fetchone()
        assert tuple(recount) == (LINES, counts.completed)
    assert store.pragma("integrity_check") == "ok"
    store.close()
