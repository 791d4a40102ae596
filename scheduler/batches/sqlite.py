"""The batch store's SQLite edge: schema, connection settings, transactions and row mapping.

WAL journal, ``synchronous`` FULL (or NORMAL) from config, one connection shared by threads
behind a lock. Tables: ``files`` (deleted rows stay so list cursors resolve), ``batches`` (with
request counts), ``lines`` (``pending`` → ``leased`` → ``done``; owner, lease expiry,
attempts) and ``results`` (primary key batch + line: at most one result per line, ever).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from scheduler.batches.disk import NETWORK_FILESYSTEMS, filesystem_type
from scheduler.batches.objects import (
    BatchError,
    BatchRecord,
    FileRecord,
    LineError,
    LineResponse,
    Purpose,
    RequestCounts,
    new_request_id,
    result_line,
)
from scheduler.batches.states import BatchStatus
from scheduler.errors import ConfigError

DATABASE = "batch.sqlite3"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    tenant TEXT NOT NULL,
    filename TEXT NOT NULL,
    purpose TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    created_at REAL NOT NULL,
    deleted_at REAL
);
CREATE INDEX IF NOT EXISTS files_by_tenant ON files (tenant, seq);
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    tenant TEXT NOT NULL,
    key_id TEXT,
    endpoint TEXT NOT NULL,
    input_file_id TEXT NOT NULL,
    completion_window TEXT NOT NULL,
    status TEXT NOT NULL,
    model TEXT,
    errors TEXT,
    output_file_id TEXT,
    error_file_id TEXT,
    metadata TEXT,
    total INTEGER NOT NULL DEFAULT 0,
    completed INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    in_progress_at REAL,
    finalizing_at REAL,
    completed_at REAL,
    failed_at REAL,
    expired_at REAL,
    cancelling_at REAL,
    cancelled_at REAL
);
CREATE INDEX IF NOT EXISTS batches_by_tenant ON batches (tenant, seq);
CREATE INDEX IF NOT EXISTS batches_by_status ON batches (status, expires_at);
CREATE TABLE IF NOT EXISTS lines (
    batch_id TEXT NOT NULL,
    line_no INTEGER NOT NULL,
    custom_id TEXT NOT NULL,
    body TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    lease_owner TEXT,
    lease_expires_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (batch_id, line_no),
    UNIQUE (batch_id, custom_id)
);
CREATE INDEX IF NOT EXISTS lines_by_state ON lines (batch_id, state, line_no);
CREATE INDEX IF NOT EXISTS lines_leased ON lines (state, lease_expires_at);
CREATE TABLE IF NOT EXISTS results (
    batch_id TEXT NOT NULL,
    line_no INTEGER NOT NULL,
    request_id TEXT NOT NULL,
    ok INTEGER NOT NULL,
    status_code INTEGER,
    response_request_id TEXT,
    response_body TEXT,
    error_code TEXT,
    error_message TEXT,
    created_at REAL NOT NULL,
    PRIMARY KEY (batch_id, line_no)
);
"""

_STAMPED = tuple(status for status in BatchStatus if status is not BatchStatus.VALIDATING)


class Database:
    """One SQLite connection, shared by threads: every use holds the (re-entrant) lock."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection
        self.lock = threading.RLock()

    @classmethod
    def connect(cls, root: Path, synchronous: str) -> Database:
        """Open ``root/batch.sqlite3`` in WAL mode with ``synchronous``; ``ConfigError`` if not."""
        try:
            connection = sqlite3.connect(
                root / DATABASE, isolation_level=None, check_same_thread=False, timeout=30.0
            )
            mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            connection.execute(f"PRAGMA synchronous={synchronous.upper()}")
            connection.execute("PRAGMA busy_timeout=30000")
            connection.executescript(_SCHEMA)
            connection.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            raise ConfigError(f"batch.store_path {root}: cannot open the database: {exc}") from None
        if str(mode).lower() != "wal":
            connection.close()
            raise ConfigError(f"batch.store_path {root}: SQLite refused WAL mode ({mode})")
        return cls(connection)

    def close(self) -> None:
        with self.lock:
            self._connection.close()

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``: other writers wait, readers do not)."""
        with self.lock:
            self._connection.execute("BEGIN IMMEDIATE")
            try:
                yield self._connection
            except BaseException:
                self._connection.execute("ROLLBACK")
                raise
            self._connection.execute("COMMIT")

    def one(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        with self.lock:
            cursor = self._connection.execute(sql, params)
            cursor.row_factory = sqlite3.Row
            row: sqlite3.Row | None = cursor.fetchone()
            return row

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self.lock:
            cursor = self._connection.execute(sql, params)
            cursor.row_factory = sqlite3.Row
            return list(cursor.fetchall())

    def pragma(self, name: Literal["journal_mode", "synchronous", "integrity_check"]) -> Any:
        """A setting as SQLite reports it (``wal``; synchronous 2 = FULL, 1 = NORMAL; ``ok``)."""
        with self.lock:
            return self._connection.execute(f"PRAGMA {name}").fetchone()[0]


def refuse_network_filesystem(root: Path, mounts: str | None) -> None:
    """``ConfigError`` when ``root`` is on NFS, SMB and the like (``mounts``: the text of
    ``/proc/self/mounts``, read from there when None; nothing to check off Linux)."""
    if mounts is None:
        try:
            mounts = Path("/proc/self/mounts").read_text()
        except OSError:
            return
    kind = filesystem_type(root, mounts)
    if kind in NETWORK_FILESYSTEMS:
        raise ConfigError(
            f"batch.store_path {root} is on a network filesystem ({kind}); SQLite's WAL needs a "
            "local disk (a PVC on block storage). Set batch.allow_network_filesystem to override."
        )


def dumps(value: Any) -> str:
    """Compact JSON, as stored and as written to result files."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def status_of(db: sqlite3.Connection, batch_id: str) -> BatchStatus:
    row = db.execute("SELECT status FROM batches WHERE id = ?", (batch_id,)).fetchone()
    return BatchStatus(row[0])


def insert_file(db: sqlite3.Connection, file: FileRecord, *, ignore: bool = False) -> None:
    db.execute(
        f"INSERT {'OR IGNORE ' if ignore else ''}INTO files "
        "(id, tenant, filename, purpose, bytes, created_at) VALUES (?, ?, ?, ?, ?, ?)",
        (file.id, file.tenant, file.filename, file.purpose.value, file.bytes, file.created_at),
    )


def insert_result(
    db: sqlite3.Connection,
    batch_id: str,
    line_no: int,
    now: float,
    response: LineResponse | None,
    error: LineError | None,
) -> bool:
    """The line's result unless it has one (then False); in the same transaction the line
    becomes ``done`` and the batch's ``completed`` or ``failed`` count goes up by one."""
    ok = response is not None and response.ok
    cursor = db.execute(
        "INSERT OR IGNORE INTO results (batch_id, line_no, request_id, ok, status_code, "
        "response_request_id, response_body, error_code, error_message, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            batch_id,
            line_no,
            new_request_id(),
            int(ok),
            response.status_code if response else None,
            response.request_id if response else None,
            dumps(response.body) if response else None,
            error.code if error else None,
            error.message if error else None,
            now,
        ),
    )
    if cursor.rowcount == 0:
        return False
    db.execute(
        "UPDATE lines SET state = 'done', lease_owner = NULL, lease_expires_at = NULL "
        "WHERE batch_id = ? AND line_no = ?",
        (batch_id, line_no),
    )
    counter = "completed" if ok else "failed"
    db.execute(f"UPDATE batches SET {counter} = {counter} + 1 WHERE id = ?", (batch_id,))
    return True


def file_record(row: sqlite3.Row) -> FileRecord:
    return FileRecord(
        id=row["id"],
        tenant=row["tenant"],
        filename=row["filename"],
        purpose=Purpose(row["purpose"]),
        bytes=row["bytes"],
        created_at=row["created_at"],
    )


def batch_record(row: sqlite3.Row) -> BatchRecord:
    errors = json.loads(row["errors"]) if row["errors"] else []
    return BatchRecord(
        id=row["id"],
        tenant=row["tenant"],
        key_id=row["key_id"],
        endpoint=row["endpoint"],
        input_file_id=row["input_file_id"],
        completion_window=row["completion_window"],
        status=BatchStatus(row["status"]),
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        model=row["model"],
        errors=tuple(
            BatchError(e["code"], e["message"], e.get("param"), e.get("line")) for e in errors
        ),
        output_file_id=row["output_file_id"],
        error_file_id=row["error_file_id"],
        counts=RequestCounts(row["total"], row["completed"], row["failed"]),
        metadata=json.loads(row["metadata"]) if row["metadata"] else None,
        stamps={s: row[s.stamp] for s in _STAMPED if row[s.stamp] is not None},
    )


def result_record(row: sqlite3.Row) -> dict[str, Any]:
    """A ``results`` row joined with its line's ``custom_id``, as an output/error file line."""
    response = error = None
    if row["status_code"] is not None:
        body = json.loads(row["response_body"])
        response = LineResponse(row["status_code"], row["response_request_id"], body)
    if row["error_code"] is not None:
        error = LineError(row["error_code"], row["error_message"])
    return result_line(row["request_id"], row["custom_id"], response, error)
