"""The dispatcher's side of the store: lease lines, renew leases, record exactly-once results.

At-least-once execution, exactly-once results: a worker leases lines for ``lease_s`` and
renews them with ``heartbeat``; a lease that runs out goes back to ``pending`` (another worker
may run the line again), or after ``max_attempts`` leases ends the line with an
``attempts_exhausted`` error. ``record_result(s)`` keep only the first result per line.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence

from scheduler.batches.objects import (
    BatchRecord,
    LeasedLine,
    LineError,
    LineResponse,
    LineResult,
    attempts_exhausted,
)
from scheduler.batches.sqlite import Database, batch_record, insert_result
from scheduler.batches.states import BatchStatus
from scheduler.config import BatchConfig
from scheduler.errors import ObjectNotFound

LineKey = tuple[str, int]
"""``(batch_id, line_no)``: one input line."""


class Leases:
    """Lines of ``in_progress`` batches for dispatcher workers (``BatchStore.leases``)."""

    def __init__(self, db: Database, config: BatchConfig) -> None:
        self._db = db
        self._config = config

    def lease_lines(
        self,
        worker_id: str,
        n: int,
        *,
        now: float,
        batch_id: str | None = None,
        lease_s: float | None = None,
    ) -> list[LeasedLine]:
        """Lease up to ``n`` pending lines of ``in_progress`` batches not yet past their deadline,
        earliest deadline first, then in line order (only ``batch_id``'s when given).

        Runs ``expire_leases`` first. Each line's ``attempts`` counts this lease. No other
        worker gets the line until ``lease_expires_at`` (pushed on by ``heartbeat``).
        """
        expires_at = now + (self._config.lease_s if lease_s is None else lease_s)
        leased: list[LeasedLine] = []
        with self._db.write() as db:
            self._expire(db, now)
            query = "SELECT * FROM batches WHERE status = ? AND expires_at > ?"
            params: tuple[object, ...] = (BatchStatus.IN_PROGRESS.value, now)
            if batch_id is not None:
                query, params = query + " AND id = ?", (*params, batch_id)
            for row in self._db.all(query + " ORDER BY expires_at, seq", params):
                if len(leased) >= n:
                    break
                batch = batch_record(row)
                leased += _lease(db, batch, worker_id, n - len(leased), expires_at)
        return leased

    def heartbeat(
        self,
        worker_id: str,
        lines: Iterable[LineKey],
        *,
        now: float,
        lease_s: float | None = None,
    ) -> set[LineKey]:
        """Extend the worker's leases to ``now + lease_s``; the lines it still holds. A line
        missing from the answer was reclaimed or has its result: stop working on it."""
        expires_at = now + (self._config.lease_s if lease_s is None else lease_s)
        held: set[LineKey] = set()
        with self._db.write() as db:
            for batch_id, line_no in lines:
                cursor = db.execute(
                    "UPDATE lines SET lease_expires_at = ? WHERE batch_id = ? AND line_no = ? "
                    "AND state = 'leased' AND lease_owner = ?",
                    (expires_at, batch_id, line_no, worker_id),
                )
                if cursor.rowcount:
                    held.add((batch_id, line_no))
        return held

    def release(
        self, worker_id: str, lines: Iterable[LineKey], *, count_attempt: bool = False
    ) -> int:
        """Give the worker's leased lines back unfinished (admission said "not now", shutdown);
        how many. The attempt does not count unless ``count_attempt``."""
        released = 0
        with self._db.write() as db:
            for batch_id, line_no in lines:
                cursor = db.execute(
                    "UPDATE lines SET state = 'pending', lease_owner = NULL, "
                    "lease_expires_at = NULL, attempts = attempts - ? "
                    "WHERE batch_id = ? AND line_no = ? AND state = 'leased' AND lease_owner = ?",
                    (0 if count_attempt else 1, batch_id, line_no, worker_id),
                )
                released += cursor.rowcount
        return released

    def record_result(
        self,
        batch_id: str,
        line_no: int,
        *,
        now: float,
        response: LineResponse | None = None,
        error: LineError | None = None,
    ) -> bool:
        """Commit the line's one result: an engine response (2xx → output file, any other
        status → error file) or an error (→ error file). True when this call recorded it;
        False when the line already had one (run twice, or settled as expired or cancelled).
        Accepted from any worker, lease or not. ``ObjectNotFound`` for an unknown line."""
        result = LineResult(batch_id, line_no, response, error)
        return self.record_results([result], now=now)[0]

    def record_results(self, results: Sequence[LineResult], *, now: float) -> list[bool]:
        """``record_result`` for many lines in one transaction (one fsync: group commit);
        whether each was recorded. All or none: an unknown line records nothing."""
        with self._db.write() as db:
            recorded = []
            for result in results:
                key = (result.batch_id, result.line_no)
                known = db.execute(
                    "SELECT 1 FROM lines WHERE batch_id = ? AND line_no = ?", key
                ).fetchone()
                if known is None:
                    raise ObjectNotFound("batch line", f"{result.batch_id}#{result.line_no}")
                recorded.append(insert_result(db, *key, now, result.response, result.error))
            return recorded

    def expire_leases(self, *, now: float) -> int:
        """Reclaim leases that ran out: the line is ``pending`` again, or after ``max_attempts``
        leases it is done with an ``attempts_exhausted`` error. How many were reclaimed."""
        with self._db.write() as db:
            return self._expire(db, now)

    def _expire(self, db: sqlite3.Connection, now: float) -> int:
        rows = db.execute(
            "SELECT batch_id, line_no, attempts FROM lines "
            "WHERE state = 'leased' AND lease_expires_at <= ?",
            (now,),
        ).fetchall()
        for batch_id, line_no, attempts in rows:
            if attempts >= self._config.max_attempts:
                insert_result(db, batch_id, line_no, now, None, attempts_exhausted(attempts))
            else:
                db.execute(
                    "UPDATE lines SET state = 'pending', lease_owner = NULL, "
                    "lease_expires_at = NULL WHERE batch_id = ? AND line_no = ?",
                    (batch_id, line_no),
                )
        return len(rows)

    def in_flight(self, batch_id: str, *, now: float) -> int:
        """The batch's lines leased with a lease still running."""
        row = self._db.one(
            "SELECT COUNT(*) FROM lines WHERE batch_id = ? AND state = 'leased' "
            "AND lease_expires_at > ?",
            (batch_id, now),
        )
        return int(row[0]) if row is not None else 0

    def line_states(self, batch_id: str) -> dict[str, int]:
        """How many of the batch's lines are ``pending``, ``leased`` and ``done``."""
        rows = self._db.all(
            "SELECT state, COUNT(*) FROM lines WHERE batch_id = ? GROUP BY state", (batch_id,)
        )
        counts = {"pending": 0, "leased": 0, "done": 0}
        counts.update({row[0]: row[1] for row in rows})
        return counts


def _lease(
    db: sqlite3.Connection, batch: BatchRecord, worker_id: str, n: int, expires_at: float
) -> list[LeasedLine]:
    rows = db.execute(
        "SELECT line_no, custom_id, body, attempts FROM lines "
        "WHERE batch_id = ? AND state = 'pending' ORDER BY line_no LIMIT ?",
        (batch.id, n),
    ).fetchall()
    db.executemany(
        "UPDATE lines SET state = 'leased', lease_owner = ?, lease_expires_at = ?, "
        "attempts = attempts + 1 WHERE batch_id = ? AND line_no = ?",
        [(worker_id, expires_at, batch.id, row[0]) for row in rows],
    )
    return [
        LeasedLine(
            batch_id=batch.id,
            line_no=line_no,
            custom_id=custom_id,
            endpoint=batch.endpoint,
            model=batch.model or "",
            body=json.loads(body),
            tenant=batch.tenant,
            key_id=batch.key_id,
            attempts=attempts + 1,
            lease_expires_at=expires_at,
            batch_expires_at=batch.expires_at,
        )
        for line_no, custom_id, body, attempts in rows
    ]
