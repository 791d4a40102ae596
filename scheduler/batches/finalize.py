"""Settle batches: write their output and error files atomically, then flip the status.

What is due comes from ``states.settle``; this module does it. Order, each step durable before
the next: (1) ``in_progress`` → ``finalizing``; (2) one transaction gives every line without a
result its error record (``batch_expired`` / ``batch_cancelled``); (3) each file goes to a temp
file, is fsynced and renamed into place; (4) one transaction adds the file rows and moves the
batch to its terminal status naming them. A crash anywhere leaves the batch non-terminal and
the next ``finalize`` redoes (3)–(4): file ids derive from the batch, and the lines, their
``batch_req_`` ids and their order are stored, so the same bytes replace any partial file.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import threading
from collections.abc import Iterator
from typing import Literal

from scheduler.batches.disk import FileBodies
from scheduler.batches.leases import Leases
from scheduler.batches.objects import FILL_ERRORS, BatchRecord, FileRecord, LineError, Purpose
from scheduler.batches.sqlite import (
    Database,
    batch_record,
    dumps,
    insert_file,
    insert_result,
    result_record,
)
from scheduler.batches.states import BatchStatus, Progress, settle

log = logging.getLogger(__name__)

RESULT_PAGE = 1000
"""Results read per query while a file is written (the database lock is not held meanwhile)."""

_ACTIVE = (BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS, BatchStatus.CANCELLING)


def result_file_id(batch_id: str, kind: Literal["output", "error"]) -> str:
    """The id of a batch's output or error file, derived from the batch id."""
    digest = hashlib.sha256(f"{batch_id}:{kind}".encode()).hexdigest()
    return f"file-{digest[:24]}"


class Finalizer:
    """Moves due batches to completed, cancelled or expired (``BatchStore.finalizer``)."""

    def __init__(self, db: Database, bodies: FileBodies, leases: Leases) -> None:
        self._db = db
        self._bodies = bodies
        self._leases = leases
        self._settling = threading.Lock()
        """One settlement at a time in this process."""

    def finalize(self, batch_id: str, *, now: float) -> BatchRecord:
        """Move the batch on if it is due: completed (every line done), cancelled (cancelling
        with nothing in flight) or expired (past its deadline); unchanged otherwise. Idempotent
        and safe to rerun after a crash at any point."""
        with self._settling:
            batch = self._batch(batch_id)
            due = settle(self._progress(batch, now), now)
            if due is None:
                return batch
            for step in due.steps[:-1]:  # finalizing: visible while the files are written
                with self._db.write() as db:
                    db.execute(
                        f"UPDATE batches SET status = ?, {step.target.stamp} = ? "
                        "WHERE id = ? AND status = ?",
                        (step.target.value, now, batch_id, step.source.value),
                    )
            if due.fill is not None:
                with self._db.write() as db:
                    _fill(db, batch_id, FILL_ERRORS[due.fill], now)
            output = self._write_file(batch, "output", now)
            errors = self._write_file(batch, "error", now)
            last = due.steps[-1]
            with self._db.write() as db:
                for file in (output, errors):
                    if file is not None:
                        insert_file(db, file, ignore=True)
                db.execute(
                    f"UPDATE batches SET status = ?, {last.target.stamp} = ?, "
                    "output_file_id = ?, error_file_id = ? WHERE id = ? AND status = ?",
                    (
                        last.target.value,
                        now,
                        output.id if output else None,
                        errors.id if errors else None,
                        batch_id,
                        last.source.value,
                    ),
                )
            log.info("batch %s: %s (%s)", batch_id, last.target.value, last.reason)
            return self._batch(batch_id)

    def expire(self, *, now: float) -> list[BatchRecord]:
        """Settle every unfinished batch past its deadline (``batch_expired`` error records
        for its lines without a result; completed lines stay in the output file)."""
        marks = ", ".join("?" for _ in _ACTIVE)
        rows = self._db.all(
            f"SELECT id FROM batches WHERE status IN ({marks}) AND expires_at <= ? "
            "ORDER BY expires_at",
            (*(status.value for status in _ACTIVE), now),
        )
        return [self.finalize(row["id"], now=now) for row in rows]

    def advance(self, *, now: float) -> list[BatchRecord]:
        """Settle every batch that is due (all lines done, cancelling, past the deadline, or a
        finalize cut short); the batches that reached a terminal status."""
        rows = self._db.all(
            "SELECT id FROM batches WHERE status IN (?, ?) "
            "OR (status = ? AND (total = completed + failed OR expires_at <= ?)) "
            "OR (status = ? AND expires_at <= ?) ORDER BY expires_at",
            (
                BatchStatus.FINALIZING.value,
                BatchStatus.CANCELLING.value,
                BatchStatus.IN_PROGRESS.value,
                now,
                BatchStatus.VALIDATING.value,
                now,
            ),
        )
        settled = [self.finalize(row["id"], now=now) for row in rows]
        return [batch for batch in settled if batch.status.terminal]

    def _progress(self, batch: BatchRecord, now: float) -> Progress:
        in_flight, finished_at = 0, None
        if batch.status is BatchStatus.CANCELLING:
            in_flight = self._leases.in_flight(batch.id, now=now)
        if batch.counts.unfinished == 0 and batch.counts.total > 0:
            row = self._db.one(
                "SELECT MAX(created_at) FROM results WHERE batch_id = ?", (batch.id,)
            )
            finished_at = None if row is None else row[0]
        return Progress(
            batch.status, batch.expires_at, batch.counts.unfinished, in_flight, finished_at
        )

    def _batch(self, batch_id: str) -> BatchRecord:
        row = self._db.one("SELECT * FROM batches WHERE id = ?", (batch_id,))
        assert row is not None, batch_id
        return batch_record(row)

    def _write_file(
        self, batch: BatchRecord, kind: Literal["output", "error"], now: float
    ) -> FileRecord | None:
        """Write the output (2xx) or error file atomically; None when no line goes there."""
        ok = int(kind == "output")
        row = self._db.one(
            "SELECT COUNT(*) FROM results WHERE batch_id = ? AND ok = ?", (batch.id, ok)
        )
        if row is None or row[0] == 0:
            return None
        file_id = result_file_id(batch.id, kind)
        size = self._bodies.write(file_id, self._lines(batch.id, ok))
        name = f"{batch.id}_{kind}.jsonl"
        return FileRecord(file_id, batch.tenant, name, Purpose.BATCH_OUTPUT, size, now)

    def _lines(self, batch_id: str, ok: int) -> Iterator[bytes]:
        """The file's lines in input order, a page of results at a time."""
        after = 0
        while True:
            rows = self._db.all(
                "SELECT r.*, l.custom_id FROM results r JOIN lines l "
                "ON l.batch_id = r.batch_id AND l.line_no = r.line_no "
                "WHERE r.batch_id = ? AND r.ok = ? AND r.line_no > ? ORDER BY r.line_no LIMIT ?",
                (batch_id, ok, after, RESULT_PAGE),
            )
            if not rows:
                return
            for row in rows:
                yield dumps(result_record(row)).encode() + b"\n"
            after = rows[-1]["line_no"]


def _fill(db: sqlite3.Connection, batch_id: str, error: LineError, now: float) -> None:
    rows = db.execute(
        "SELECT line_no FROM lines WHERE batch_id = ? AND state != 'done'", (batch_id,)
    ).fetchall()
    for (line_no,) in rows:
        insert_result(db, batch_id, line_no, now, None, error)
