"""The dispatcher's read-only view of the store: every ``in_progress`` batch with its deadline,
its counts and how many of its lines a worker may lease now (pending, or leased by a worker
whose lease ran out: ``lease_lines`` reclaims those), earliest deadline first.

Reads the store's SQLite schema (``sqlite``) through a connection of its own; never writes.
"""

from __future__ import annotations

from scheduler.batches.pacing import BatchPace
from scheduler.batches.sqlite import Database
from scheduler.batches.states import BatchStatus
from scheduler.batches.store import BatchStore

_BACKLOG = """
SELECT b.id, b.created_at, b.expires_at, b.total, b.completed + b.failed AS done,
       (SELECT COUNT(*) FROM lines l WHERE l.batch_id = b.id AND (l.state = 'pending'
           OR (l.state = 'leased' AND l.lease_expires_at <= ?))) AS pending
FROM batches b WHERE b.status = ? ORDER BY b.expires_at, b.seq
"""


class Backlog:
    """``read`` the batches the dispatcher has work in."""

    def __init__(self, db: Database) -> None:
        self._db = db

    @classmethod
    def open(cls, store: BatchStore) -> Backlog:
        return cls(Database.connect(store.root, store.config.synchronous))

    def read(self, now: float) -> list[BatchPace]:
        rows = self._db.all(_BACKLOG, (now, BatchStatus.IN_PROGRESS.value))
        return [
            BatchPace(
                batch_id=row["id"],
                created_at=row["created_at"],
                expires_at=row["expires_at"],
                total=row["total"],
                done=row["done"],
                pending=row["pending"],
            )
            for row in rows
        ]

    def close(self) -> None:
        self._db.close()
