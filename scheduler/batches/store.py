"""The durable Batch API store: files, batches, their lines and results (SQLite + bodies on disk).

``BatchStore`` is the tenant-facing half (files, batches, validation, cancel: another tenant's
id is ``ObjectNotFound``, a 404) and holds the dispatcher's halves: ``leases`` (lease lines,
heartbeats, exactly-once results; ``leases.Leases``) and ``finalizer`` (settle batches into
completed, cancelled or expired with their output and error files; ``finalize.Finalizer``).

Every method is thread-safe and blocks on disk I/O (fsync per commit with ``synchronous``
FULL): call it from a worker thread, not the event loop. Time comes in as ``now`` (unix
seconds). Invariants: a terminal batch's every line has exactly one result;
``request_counts`` equal a recount of the results; an output or error file is durable before
the transaction that names it.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO, Literal

from scheduler.batches.disk import FileBodies
from scheduler.batches.finalize import Finalizer
from scheduler.batches.leases import Leases
from scheduler.batches.objects import (
    BatchError,
    BatchRecord,
    FileRecord,
    Page,
    Purpose,
    new_batch_id,
    new_file_id,
)
from scheduler.batches.sqlite import (
    Database,
    batch_record,
    dumps,
    file_record,
    insert_file,
    refuse_network_filesystem,
    status_of,
)
from scheduler.batches.states import BatchStatus, Event, transition
from scheduler.batches.validation import BodyCheck, input_lines, validate_input
from scheduler.config import BatchConfig
from scheduler.errors import ConfigError, InvalidRequest, ObjectNotFound

log = logging.getLogger(__name__)


_NOUN = {"files": "file", "batches": "batch"}


class BatchStore:
    """Files and batches of the Batch API, per tenant. Build with ``BatchStore.open``."""

    def __init__(self, config: BatchConfig, root: Path, db: Database) -> None:
        self.config = config
        self.root = root
        self.bodies = FileBodies(root)
        self._db = db
        self.leases = Leases(db, config)
        """The dispatcher's side: lease_lines, heartbeat, release, record_result(s)."""
        self.finalizer = Finalizer(db, self.bodies, self.leases)
        """Settling: finalize, expire, advance."""

    @classmethod
    def open(cls, config: BatchConfig, *, mounts: str | None = None) -> BatchStore:
        """Open (creating) the store at ``config.store_path``. ``ConfigError`` when the path is
        unusable, or on a network filesystem unless allowed (``mounts``: the text of
        ``/proc/self/mounts``, read from there when None). Sweeps leftover temp files."""
        root = Path(config.store_path).expanduser()
        try:
            root.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"batch.store_path {root}: cannot create: {exc.strerror or exc}"
            ) from None
        if not config.allow_network_filesystem:
            refuse_network_filesystem(root, mounts)
        store = cls(config, root, Database.connect(root, config.synchronous))
        live = {row[0] for row in store._db.all("SELECT id FROM files WHERE deleted_at IS NULL")}
        if removed := store.bodies.sweep(live):
            log.info("batch store %s: removed %d leftover file bodies", root, removed)
        return store

    def close(self) -> None:
        self._db.close()

    def pragma(self, name: Literal["journal_mode", "synchronous", "integrity_check"]) -> object:
        """A database setting as SQLite reports it (``wal``; synchronous 2 = FULL, 1 = NORMAL;
        integrity_check ``ok``)."""
        return self._db.pragma(name)

    # ----------------------------------------------------------------------------- files

    def create_file(
        self, tenant: str, filename: str, purpose: Purpose, source: BinaryIO, *, now: float
    ) -> FileRecord:
        """Store an upload; ``RequestTooLarge`` over ``max_file_bytes`` (nothing is kept)."""
        file_id = new_file_id()
        size = self.bodies.write_stream(file_id, source, self.config.max_file_bytes)
        record = FileRecord(file_id, tenant, filename[:255] or "file", purpose, size, now)
        try:
            with self._db.write() as db:
                insert_file(db, record)
        except BaseException:
            self.bodies.remove(file_id)
            raise
        return record

    def get_file(self, tenant: str, file_id: str) -> FileRecord:
        """The tenant's live file; ``ObjectNotFound`` for an unknown, deleted or foreign id."""
        row = self._db.one(
            "SELECT * FROM files WHERE id = ? AND tenant = ? AND deleted_at IS NULL",
            (file_id, tenant),
        )
        if row is None:
            raise ObjectNotFound("file", file_id)
        return file_record(row)

    def list_files(
        self,
        tenant: str,
        *,
        after: str | None = None,
        limit: int = 10_000,
        order: Literal["asc", "desc"] = "desc",
        purpose: str | None = None,
    ) -> Page[FileRecord]:
        """The tenant's live files by creation (newest first unless ``order="asc"``), after the
        file ``after`` (``InvalidRequest`` when that is not the tenant's)."""
        where = ["tenant = ?", "deleted_at IS NULL"]
        params: list[object] = [tenant]
        if purpose is not None:
            where.append("purpose = ?")
            params.append(purpose)
        if after is not None:
            where.append("seq < ?" if order == "desc" else "seq > ?")
            params.append(self._cursor("files", tenant, after))
        rows = self._db.all(
            f"SELECT * FROM files WHERE {' AND '.join(where)} "
            f"ORDER BY seq {'DESC' if order == 'desc' else 'ASC'} LIMIT ?",
            (*params, limit + 1),
        )
        return Page(tuple(file_record(row) for row in rows[:limit]), len(rows) > limit)

    def delete_file(self, tenant: str, file_id: str, *, now: float) -> FileRecord:
        """Delete the tenant's file (its body at once; the row stays for list cursors)."""
        with self._db.write() as db:
            record = self.get_file(tenant, file_id)
            db.execute("UPDATE files SET deleted_at = ? WHERE id = ?", (now, file_id))
        self.bodies.remove(file_id)
        return record

    def open_content(self, tenant: str, file_id: str) -> tuple[FileRecord, BinaryIO]:
        """The tenant's file and its body, open for reading (the caller closes it)."""
        with self._db.lock:
            record = self.get_file(tenant, file_id)
            try:
                return record, self.bodies.open(file_id)
            except FileNotFoundError:
                raise ObjectNotFound("file", file_id) from None

    def _cursor(self, table: Literal["files", "batches"], tenant: str, after: str) -> int:
        row = self._db.one(f"SELECT seq FROM {table} WHERE id = ? AND tenant = ?", (after, tenant))
        if row is None:
            raise InvalidRequest(
                f"`after` names no {_NOUN[table]} of yours: {after[:100]!r}.",
                param="after",
                code="invalid_value",
            )
        return int(row["seq"])

    # --------------------------------------------------------------------------- batches

    def create_batch(
        self,
        tenant: str,
        *,
        input_file_id: str,
        endpoint: str,
        completion_window: str,
        window_s: float,
        metadata: Mapping[str, str] | None,
        now: float,
        key_id: str | None = None,
    ) -> BatchRecord:
        """A new batch in ``validating`` over the tenant's ``purpose=batch`` file (its input is
        checked by ``validate_batch``, which the caller runs next)."""
        file = self._input_file(tenant, input_file_id)
        record = BatchRecord(
            id=new_batch_id(),
            tenant=tenant,
            key_id=key_id,
            endpoint=endpoint,
            input_file_id=file.id,
            completion_window=completion_window,
            status=BatchStatus.VALIDATING,
            created_at=now,
            expires_at=now + window_s,
            metadata=dict(metadata) if metadata is not None else None,
        )
        with self._db.write() as db:
            db.execute(
                "INSERT INTO batches (id, tenant, key_id, endpoint, input_file_id, "
                "completion_window, status, metadata, created_at, expires_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.id,
                    tenant,
                    key_id,
                    endpoint,
                    file.id,
                    completion_window,
                    record.status.value,
                    None if metadata is None else json.dumps(dict(metadata)),
                    now,
                    record.expires_at,
                ),
            )
        return record

    def _input_file(self, tenant: str, file_id: str) -> FileRecord:
        try:
            file = self.get_file(tenant, file_id)
        except ObjectNotFound:
            raise ObjectNotFound("file", file_id, param="input_file_id") from None
        if file.purpose is not Purpose.BATCH:
            raise InvalidRequest(
                f"File {file_id} has purpose `{file.purpose.value}`; a batch's input file must "
                "be uploaded with purpose `batch`.",
                param="input_file_id",
                code="invalid_value",
            )
        return file

    def validate_batch(self, batch_id: str, check_body: BodyCheck, *, now: float) -> BatchRecord:
        """Check a ``validating`` batch's input file: ``in_progress`` with one ``pending`` row
        per line, or ``failed`` with ``errors`` (no line stored). No-op in any other status;
        safe to run again after a crash (one transaction decides)."""
        batch = self.batch(batch_id)
        if batch.status is not BatchStatus.VALIDATING:
            return batch
        source = self._open_input(batch)  # one handle for both reads: deleting cannot race
        try:
            errors, model, count = self._check_input(batch, source, check_body)
            step = transition(batch.status, Event.REJECTED if errors else Event.VALIDATED)
            with self._db.write() as db:
                if status_of(db, batch_id) is not BatchStatus.VALIDATING:
                    return self.batch(batch_id)  # cancelled meanwhile
                if source is not None and not errors:
                    source.seek(0)
                    self._insert_lines(db, batch, source)
                db.execute(
                    f"UPDATE batches SET status = ?, {step.target.stamp} = ?, errors = ?, "
                    "model = ?, total = ? WHERE id = ?",
                    (
                        step.target.value,
                        now,
                        json.dumps([e.to_openai() for e in errors]) if errors else None,
                        model,
                        0 if errors else count,
                        batch_id,
                    ),
                )
        finally:
            if source is not None:
                source.close()
        log.info("batch %s: %s (%s)", batch_id, step.target.value, step.reason)
        return self.batch(batch_id)

    def _open_input(self, batch: BatchRecord) -> BinaryIO | None:
        try:
            return self.open_content(batch.tenant, batch.input_file_id)[1]
        except ObjectNotFound:
            return None

    def _check_input(
        self, batch: BatchRecord, source: BinaryIO | None, check_body: BodyCheck
    ) -> tuple[tuple[BatchError, ...], str | None, int]:
        if source is None:
            error = BatchError(
                "input_file_missing",
                f"The input file {batch.input_file_id} was deleted before validation.",
                "input_file_id",
            )
            return (error,), None, 0
        return validate_input(
            source,
            size=os.fstat(source.fileno()).st_size,
            endpoint=batch.endpoint,
            check_body=check_body,
            max_bytes=self.config.max_file_bytes,
            max_lines=self.config.max_lines,
        )

    def _insert_lines(self, db: sqlite3.Connection, batch: BatchRecord, source: BinaryIO) -> None:
        rows = (
            (batch.id, line.line_no, line.custom_id, dumps(line.body))
            for line in input_lines(source, batch.endpoint)
        )
        db.executemany(
            "INSERT INTO lines (batch_id, line_no, custom_id, body) VALUES (?, ?, ?, ?)", rows
        )

    def batch(self, batch_id: str) -> BatchRecord:
        """Any batch by id (the dispatcher's view; the HTTP layer uses ``get_batch``)."""
        row = self._db.one("SELECT * FROM batches WHERE id = ?", (batch_id,))
        if row is None:
            raise ObjectNotFound("batch", batch_id)
        return batch_record(row)

    def get_batch(self, tenant: str, batch_id: str) -> BatchRecord:
        """The tenant's batch; ``ObjectNotFound`` for an unknown or foreign id."""
        row = self._db.one("SELECT * FROM batches WHERE id = ? AND tenant = ?", (batch_id, tenant))
        if row is None:
            raise ObjectNotFound("batch", batch_id)
        return batch_record(row)

    def list_batches(
        self, tenant: str, *, after: str | None = None, limit: int = 20
    ) -> Page[BatchRecord]:
        """The tenant's batches, newest first, after the batch ``after``."""
        where = "tenant = ?"
        params: list[object] = [tenant]
        if after is not None:
            where += " AND seq < ?"
            params.append(self._cursor("batches", tenant, after))
        rows = self._db.all(
            f"SELECT * FROM batches WHERE {where} ORDER BY seq DESC LIMIT ?", (*params, limit + 1)
        )
        return Page(tuple(batch_record(row) for row in rows[:limit]), len(rows) > limit)

    def cancel_batch(self, tenant: str, batch_id: str, *, now: float) -> BatchRecord:
        """Cancel the tenant's batch: ``cancelling`` (no line is leased from then on), then
        ``cancelled`` at once if no line is in flight (``finalize`` does it later otherwise).
        Idempotent on a cancelling or cancelled batch; ``IllegalTransition`` on a finished one."""
        with self._db.write() as db:
            batch = self.get_batch(tenant, batch_id)
            step = transition(batch.status, Event.CANCEL)
            if step.changes:
                db.execute(
                    f"UPDATE batches SET status = ?, {step.target.stamp} = ? WHERE id = ?",
                    (step.target.value, now, batch_id),
                )
        return self.finalizer.finalize(batch_id, now=now)

    def pending_validation(self) -> list[str]:
        """Batches still ``validating`` (after a restart: run ``validate_batch`` on each)."""
        rows = self._db.all(
            "SELECT id FROM batches WHERE status = ? ORDER BY seq", (BatchStatus.VALIDATING.value,)
        )
        return [row["id"] for row in rows]
