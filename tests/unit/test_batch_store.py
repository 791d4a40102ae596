"""The durable batch store: SQLite settings, tenant isolation, validation into lines, leases and
their expiry, exactly-once results, atomic finalize, cancel and expiry (fake time throughout)."""

from __future__ import annotations

import io
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from scheduler.batches import (
    BatchRecord,
    BatchStatus,
    BatchStore,
    FileRecord,
    IllegalTransition,
    LineError,
    LineResponse,
    LineResult,
    ObjectNotFound,
    Purpose,
    parse_window,
)
from scheduler.batches.disk import FileBodies, filesystem_type
from scheduler.batches.finalize import result_file_id
from scheduler.config import BatchConfig
from scheduler.errors import ConfigError, InvalidRequest, RequestTooLarge

T0 = 1_700_000_000.0
URL = "/v1/chat/completions"
EXPIRED_MESSAGE = "This request could not be executed before the completion window expired."


def check_body(endpoint: str, body: Mapping[str, Any]) -> str:
    """Stands in for the gateway's check (tested in test_batch_validation)."""
    if body.get("bad"):
        raise InvalidRequest("bad on purpose", param="bad", code="invalid_value")
    return str(body["model"])


def open_store(root: Path, **settings: Any) -> BatchStore:
    config = BatchConfig(store_path=str(root), **{"lease_s": 30, "heartbeat_s": 5, **settings})
    return BatchStore.open(config, mounts="")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[BatchStore]:
    opened = open_store(tmp_path / "store", max_attempts=2)
    yield opened
    opened.close()


def jsonl(n: int, **body: Any) -> bytes:
    return b"".join(
        json.dumps(
            {
                "custom_id": f"req-{i}",
                "method": "POST",
                "url": URL,
                "body": {"model": "m", "messages": [{"role": "user", "content": str(i)}], **body},
            }
        ).encode()
        + b"\n"
        for i in range(n)
    )


def upload(store: BatchStore, data: bytes, tenant: str = "acme", now: float = T0) -> FileRecord:
    return store.create_file(tenant, "in.jsonl", Purpose.BATCH, io.BytesIO(data), now=now)


def start(
    store: BatchStore, n: int = 3, tenant: str = "acme", window_s: float = 3600.0
) -> BatchRecord:
    file = upload(store, jsonl(n), tenant)
    batch = store.create_batch(
        tenant,
        input_file_id=file.id,
        endpoint=URL,
        completion_window=f"{int(window_s)}s",
        window_s=window_s,
        metadata={"team": "a"},
        now=T0,
    )
    return store.validate_batch(batch.id, check_body, now=T0)


def ok(text: str = "fine") -> LineResponse:
    return LineResponse(200, f"req-{text}", {"choices": [{"text": text}]})


def content(store: BatchStore, tenant: str, file_id: str | None) -> list[dict[str, Any]]:
    assert file_id is not None
    _, handle = store.open_content(tenant, file_id)
    with handle:
        return [json.loads(row) for row in handle.read().splitlines()]


def recount(root: Path, batch_id: str) -> tuple[int, int, int]:
    with sqlite3.connect(root / "batch.sqlite3") as db:
        total = db.execute("SELECT COUNT(*) FROM lines WHERE batch_id = ?", (batch_id,))
        done = db.execute(
            "SELECT SUM(ok), SUM(1 - ok) FROM results WHERE batch_id = ?", (batch_id,)
        ).fetchone()
        return total.fetchone()[0], done[0] or 0, done[1] or 0


def assert_counts_match_results(store: BatchStore, batch_id: str) -> None:
    counts = store.batch(batch_id).counts
    assert (counts.total, counts.completed, counts.failed) == recount(store.root, batch_id)


# ------------------------------------------------------------------------------ sqlite


@pytest.mark.parametrize(("synchronous", "level"), [("full", 2), ("normal", 1)])
def test_wal_and_the_configured_synchronous_level(
    tmp_path: Path, synchronous: str, level: int
) -> None:
    store = open_store(tmp_path, synchronous=synchronous)
    assert store.pragma("journal_mode") == "wal"
    assert store.pragma("synchronous") == level
    assert store.pragma("integrity_check") == "ok"
    store.close()
    with sqlite3.connect(tmp_path / "batch.sqlite3") as other:  # WAL persists in the file
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_network_filesystem_is_refused_unless_allowed(tmp_path: Path) -> None:
    mounts = f"/dev/sda1 / ext4 rw 0 0\nserver:/x {tmp_path} nfs4 rw 0 0\n"
    config = BatchConfig(store_path=str(tmp_path / "s"))
    with pytest.raises(ConfigError, match="network filesystem \\(nfs4\\)"):
        BatchStore.open(config, mounts=mounts)
    allowed = config.model_copy(update={"allow_network_filesystem": True})
    BatchStore.open(allowed, mounts=mounts).close()


def test_filesystem_type_takes_the_longest_mount_point(tmp_path: Path) -> None:
    mounts = f"a / ext4 rw 0 0\nb {tmp_path} xfs rw 0 0\nc {tmp_path}x nfs rw 0 0\n"
    assert filesystem_type(tmp_path / "deep" / "er", mounts) == "xfs"
    assert filesystem_type(Path("/elsewhere"), mounts) == "ext4"


def test_an_unusable_path_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(ConfigError, match="cannot create"):
        open_store(tmp_path / "file" / "store")


# ------------------------------------------------------------------------------- files


def test_files_belong_to_their_tenant(store: BatchStore) -> None:
    mine = upload(store, b'{"a": 1}\n')
    assert store.get_file("acme", mine.id) == mine
    assert content(store, "acme", mine.id) == [{"a": 1}]
    for call in (
        lambda: store.get_file("evil", mine.id),
        lambda: store.open_content("evil", mine.id),
        lambda: store.delete_file("evil", mine.id, now=T0),
        lambda: store.create_batch(
            "evil",
            input_file_id=mine.id,
            endpoint=URL,
            completion_window="24h",
            window_s=86_400,
            metadata=None,
            now=T0,
        ),
    ):
        with pytest.raises(ObjectNotFound):
            call()
    assert store.list_files("evil").items == ()
    with pytest.raises(InvalidRequest, match="after"):
        store.list_files("evil", after=mine.id)
    assert store.get_file("acme", mine.id) == mine  # untouched by the attempts


def test_delete_removes_the_body_and_keeps_the_cursor(store: BatchStore) -> None:
    first, second = upload(store, b"1\n"), upload(store, b"2\n")
    store.delete_file("acme", second.id, now=T0)
    with pytest.raises(ObjectNotFound):
        store.get_file("acme", second.id)
    assert not store.bodies.path(second.id).exists()
    assert store.list_files("acme", after=second.id).items == (first,)


def test_an_upload_over_the_limit_leaves_nothing(tmp_path: Path) -> None:
    store = open_store(tmp_path, max_file_bytes=1024)
    with pytest.raises(RequestTooLarge):
        upload(store, b"x" * 1025)
    assert list((tmp_path / "files").iterdir()) == []
    assert list((tmp_path / "tmp").iterdir()) == []
    assert store.list_files("acme").items == ()
    assert upload(store, b"x" * 1024).bytes == 1024


def test_lists_page_newest_first(store: BatchStore) -> None:
    files = [upload(store, b"%d\n" % i, now=T0 + i) for i in range(5)]
    page = store.list_files("acme", limit=2)
    assert page.items == (files[4], files[3]) and page.has_more
    page = store.list_files("acme", limit=2, after=files[3].id)
    assert page.items == (files[2], files[1]) and page.has_more
    page = store.list_files("acme", limit=2, after=files[1].id)
    assert page.items == (files[0],) and not page.has_more
    assert store.list_files("acme", order="asc", limit=1, after=files[0].id).items == (files[1],)
    assert store.list_files("acme", purpose="batch_output").items == ()
    batches = [start(store, 1) for _ in range(3)]
    assert [b.id for b in store.list_batches("acme", limit=2).items] == [
        batches[2].id,
        batches[1].id,
    ]
    assert [b.id for b in store.list_batches("acme", after=batches[1].id).items] == [batches[0].id]


def test_sweep_removes_old_leftovers_only(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    kept = upload(store, b"1\n")
    store.close()
    bodies = FileBodies(tmp_path)
    stale_temp = bodies.tmp / "x.part"
    stale_orphan = bodies.files / ("file-" + "1" * 24)
    fresh_orphan = bodies.files / ("file-" + "0" * 24)  # an upload about to commit elsewhere
    for path in (stale_temp, stale_orphan, fresh_orphan):
        path.write_bytes(b"partial")
        if path is not fresh_orphan:
            os.utime(path, (T0, T0))
    open_store(tmp_path).close()
    assert not stale_temp.exists() and not stale_orphan.exists()
    assert fresh_orphan.exists() and bodies.path(kept.id).exists()


# ----------------------------------------------------------------------------- batches


def test_validation_turns_the_file_into_pending_lines(store: BatchStore) -> None:
    batch = start(store, 4)
    assert batch.status is BatchStatus.IN_PROGRESS
    assert batch.model == "m" and batch.counts.total == 4
    assert batch.stamps[BatchStatus.IN_PROGRESS] == T0
    assert store.leases.line_states(batch.id) == {"pending": 4, "leased": 0, "done": 0}
    shape = batch.to_openai()
    assert shape["request_counts"] == {"total": 4, "completed": 0, "failed": 0}
    assert shape["metadata"] == {"team": "a"} and shape["errors"] is None
    assert shape["expires_at"] == int(T0 + 3600)


def test_a_failed_validation_stores_no_line(store: BatchStore) -> None:
    data = jsonl(2) + b"{oops\n" + jsonl(1, bad=True).replace(b"req-0", b"req-9")
    file = upload(store, data)
    batch = store.create_batch(
        "acme",
        input_file_id=file.id,
        endpoint=URL,
        completion_window="24h",
        window_s=86_400,
        metadata=None,
        now=T0,
    )
    assert batch.status is BatchStatus.VALIDATING
    batch = store.validate_batch(batch.id, check_body, now=T0 + 1)
    assert batch.status is BatchStatus.FAILED
    assert batch.stamps[BatchStatus.FAILED] == T0 + 1
    assert [(e.line, e.code, e.param) for e in batch.errors] == [
        (3, "invalid_json_line", None),
        (4, "invalid_value", "body.bad"),
    ]
    assert batch.to_openai()["errors"]["data"][0] == {
        "code": "invalid_json_line",
        "message": "This line is not parseable as valid JSON.",
        "param": None,
        "line": 3,
    }
    assert store.leases.line_states(batch.id) == {"pending": 0, "leased": 0, "done": 0}
    assert store.leases.lease_lines("w", 10, now=T0 + 2) == []
    assert store.validate_batch(batch.id, check_body, now=T0 + 3) == batch  # no-op now


def test_an_input_deleted_before_validation_fails_the_batch(store: BatchStore) -> None:
    file = upload(store, jsonl(2))
    batch = store.create_batch(
        "acme",
        input_file_id=file.id,
        endpoint=URL,
        completion_window="24h",
        window_s=86_400,
        metadata=None,
        now=T0,
    )
    store.delete_file("acme", file.id, now=T0)
    failed = store.validate_batch(batch.id, check_body, now=T0)
    assert failed.status is BatchStatus.FAILED
    assert [(e.code, e.param) for e in failed.errors] == [("input_file_missing", "input_file_id")]


def test_an_output_file_cannot_be_an_input(store: BatchStore) -> None:
    batch = start(store, 1)
    store.cancel_batch("acme", batch.id, now=T0 + 1)
    error_file = store.get_batch("acme", batch.id).error_file_id
    assert error_file is not None
    with pytest.raises(InvalidRequest, match="purpose `batch_output`"):
        store.create_batch(
            "acme",
            input_file_id=error_file,
            endpoint=URL,
            completion_window="24h",
            window_s=86_400,
            metadata=None,
            now=T0,
        )


def test_batches_belong_to_their_tenant(store: BatchStore) -> None:
    batch = start(store, 2)
    for call in (
        lambda: store.get_batch("evil", batch.id),
        lambda: store.cancel_batch("evil", batch.id, now=T0),
    ):
        with pytest.raises(ObjectNotFound):
            call()
    assert store.list_batches("evil").items == ()
    assert store.get_batch("acme", batch.id).status is BatchStatus.IN_PROGRESS


def test_a_restart_resumes_where_it_stopped(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    running = start(store, 3)
    store.leases.lease_lines("w", 1, now=T0)
    store.leases.record_result(running.id, 2, now=T0, response=ok())
    file = upload(store, jsonl(2))
    waiting = store.create_batch(
        "acme",
        input_file_id=file.id,
        endpoint=URL,
        completion_window="24h",
        window_s=86_400,
        metadata=None,
        now=T0,
    )
    store.close()  # as if killed between creating and validating
    reopened = open_store(tmp_path)
    assert reopened.pending_validation() == [waiting.id]
    assert reopened.validate_batch(waiting.id, check_body, now=T0).counts.total == 2
    assert reopened.leases.line_states(running.id) == {"pending": 1, "leased": 1, "done": 1}
    assert_counts_match_results(reopened, running.id)


# ---------------------------------------------------------------------------- leases


def test_leases_expire_and_lines_run_again(store: BatchStore) -> None:
    batch = start(store, 3)
    first = store.leases.lease_lines("w1", 2, now=T0, lease_s=30)
    assert [(line.line_no, line.attempts) for line in first] == [(1, 1), (2, 1)]
    assert first[0].body["messages"][0]["content"] == "0"
    assert first[0].custom_id == "req-0" and first[0].model == "m" and first[0].tenant == "acme"
    second = store.leases.lease_lines("w2", 5, now=T0 + 1)
    assert [line.line_no for line in second] == [3]
    assert store.leases.lease_lines("w2", 5, now=T0 + 2) == []
    held = store.leases.heartbeat("w1", [first[0].key], now=T0 + 20, lease_s=30)
    assert held == {first[0].key}  # line 1 renewed to T0 + 50; line 2 still ends at T0 + 30
    again = store.leases.lease_lines("w2", 5, now=T0 + 30.5)  # line 3's lease ends at T0 + 31
    assert [(line.line_no, line.attempts) for line in again] == [(2, 2)]
    assert store.leases.heartbeat("w1", [first[1].key], now=T0 + 32) == set()
    assert store.leases.line_states(batch.id) == {"pending": 0, "leased": 3, "done": 0}


def test_leases_go_to_the_earliest_deadline_first(store: BatchStore) -> None:
    late = start(store, 2, window_s=7200)
    soon = start(store, 2, window_s=600)
    leased = store.leases.lease_lines("w", 3, now=T0)
    assert [(line.batch_id, line.line_no) for line in leased] == [
        (soon.id, 1),
        (soon.id, 2),
        (late.id, 1),
    ]
    assert [line.batch_id for line in store.leases.lease_lines("w", 9, now=T0, batch_id=late.id)]


def test_a_line_that_keeps_losing_its_lease_ends_in_the_error_file(store: BatchStore) -> None:
    batch = start(store, 1)  # max_attempts=2
    store.leases.lease_lines("w", 1, now=T0, lease_s=10)
    assert store.leases.expire_leases(now=T0 + 10) == 1
    assert store.leases.line_states(batch.id)["pending"] == 1
    store.leases.lease_lines("w", 1, now=T0 + 11, lease_s=10)
    assert store.leases.lease_lines("w", 1, now=T0 + 21) == []  # reclaimed as exhausted
    assert store.batch(batch.id).counts.failed == 1
    done = store.finalizer.advance(now=T0 + 22)
    assert [b.status for b in done] == [BatchStatus.COMPLETED]
    [record] = content(store, "acme", done[0].error_file_id)
    assert record["error"]["code"] == "attempts_exhausted" and record["response"] is None


def test_a_released_line_does_not_count_an_attempt(store: BatchStore) -> None:
    batch = start(store, 1)
    [line] = store.leases.lease_lines("w", 1, now=T0)
    assert store.leases.release("other", [line.key]) == 0
    assert store.leases.release("w", [line.key]) == 1
    [again] = store.leases.lease_lines("w", 1, now=T0 + 1)
    assert again.attempts == 1
    assert store.leases.line_states(batch.id)["leased"] == 1


def test_results_are_recorded_once_per_line(store: BatchStore) -> None:
    batch = start(store, 2)
    store.leases.lease_lines("w1", 2, now=T0, lease_s=5)
    store.leases.lease_lines("w2", 2, now=T0 + 6)  # both lines run twice
    assert store.leases.record_result(batch.id, 1, now=T0 + 7, response=ok("first"))
    assert not store.leases.record_result(batch.id, 1, now=T0 + 8, response=ok("second"))
    assert not store.leases.record_result(
        batch.id, 1, now=T0 + 8, error=LineError("x", "late failure")
    )
    assert store.leases.record_result(
        batch.id, 2, now=T0 + 9, response=LineResponse(400, "r2", {"error": {"message": "no"}})
    )
    counts = store.batch(batch.id).counts
    assert (counts.total, counts.completed, counts.failed) == (2, 1, 1)
    assert_counts_match_results(store, batch.id)
    with pytest.raises(ObjectNotFound):
        store.leases.record_result(batch.id, 99, now=T0, response=ok())
    with pytest.raises(ValueError, match="exactly one"):
        store.leases.record_result(batch.id, 1, now=T0)


def test_many_results_commit_together_or_not_at_all(store: BatchStore) -> None:
    batch = start(store, 3)
    first = LineResult(batch.id, 1, response=ok())
    assert store.leases.record_results(
        [first, LineResult(batch.id, 2, error=LineError("x", "y")), first], now=T0
    ) == [True, True, False]
    with pytest.raises(ObjectNotFound):
        store.leases.record_results(
            [LineResult(batch.id, 3, response=ok()), LineResult(batch.id, 4, response=ok())],
            now=T0,
        )
    assert store.leases.line_states(batch.id) == {"pending": 1, "leased": 0, "done": 2}
    assert_counts_match_results(store, batch.id)


# -------------------------------------------------------------------------- settling


def test_finalize_writes_openai_shaped_files(store: BatchStore) -> None:
    batch = start(store, 3)
    store.leases.lease_lines("w", 3, now=T0)
    assert store.finalizer.finalize(batch.id, now=T0 + 1).status is BatchStatus.IN_PROGRESS
    store.leases.record_result(batch.id, 3, now=T0 + 1, response=ok("c"))
    store.leases.record_result(batch.id, 1, now=T0 + 2, response=ok("a"))
    failure = LineResponse(400, "r-b", {"error": {"message": "bad", "type": "x"}})
    store.leases.record_result(batch.id, 2, now=T0 + 3, response=failure)
    done = store.finalizer.finalize(batch.id, now=T0 + 4)
    assert done.status is BatchStatus.COMPLETED
    assert done.stamps[BatchStatus.FINALIZING] == done.stamps[BatchStatus.COMPLETED] == T0 + 4
    assert done.output_file_id == result_file_id(batch.id, "output")
    output = content(store, "acme", done.output_file_id)
    assert [line["custom_id"] for line in output] == ["req-0", "req-2"]  # input order
    assert output[0]["id"].startswith("batch_req_") and output[0]["error"] is None
    assert output[0]["response"] == {
        "status_code": 200,
        "request_id": "req-a",
        "body": {"choices": [{"text": "a"}]},
    }
    [error_line] = content(store, "acme", done.error_file_id)
    assert set(error_line) == {"id", "custom_id", "response", "error"}
    assert error_line["custom_id"] == "req-1" and error_line["error"] is None
    assert error_line["response"]["status_code"] == 400
    output_file = store.get_file("acme", done.output_file_id or "")
    assert output_file.purpose is Purpose.BATCH_OUTPUT
    assert output_file.filename == f"{batch.id}_output.jsonl"
    with pytest.raises(ObjectNotFound):
        store.get_file("evil", done.output_file_id or "")
    assert store.finalizer.finalize(batch.id, now=T0 + 9) == done  # idempotent
    assert_counts_match_results(store, batch.id)


def test_a_finalize_cut_short_leaves_no_file_and_reruns_to_the_same_bytes(
    store: BatchStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = start(store, 2)
    store.leases.record_result(batch.id, 1, now=T0, response=ok())
    store.leases.record_result(batch.id, 2, now=T0, error=LineError("engine_error", "boom"))
    real_write = FileBodies.write
    calls: list[str] = []

    def crash_in_the_second_file(self: FileBodies, file_id: str, chunks: Iterable[bytes]) -> int:
        calls.append(file_id)
        if len(calls) == 2:

            def torn() -> Iterator[bytes]:
                yield next(iter(chunks))[:10]
                raise OSError("disk gone")

            return real_write(self, file_id, torn())
        return real_write(self, file_id, chunks)

    monkeypatch.setattr(FileBodies, "write", crash_in_the_second_file)
    with pytest.raises(OSError, match="disk gone"):
        store.finalizer.finalize(batch.id, now=T0 + 1)
    cut = store.batch(batch.id)
    assert cut.status is BatchStatus.FINALIZING
    assert cut.output_file_id is None and cut.error_file_id is None
    assert store.list_files("acme", purpose="batch_output").items == ()
    assert not store.bodies.path(result_file_id(batch.id, "error")).exists()  # no torn file
    assert list(store.bodies.tmp.iterdir()) == []
    first_output = store.bodies.path(result_file_id(batch.id, "output")).read_bytes()

    monkeypatch.setattr(FileBodies, "write", real_write)
    done = store.finalizer.advance(now=T0 + 2)
    assert [b.status for b in done] == [BatchStatus.COMPLETED]
    assert store.bodies.path(result_file_id(batch.id, "output")).read_bytes() == first_output
    [error_line] = content(store, "acme", done[0].error_file_id)
    assert error_line["error"] == {"code": "engine_error", "message": "boom"}


def test_cancel_lets_lines_in_flight_finish(store: BatchStore) -> None:
    batch = start(store, 3)
    [in_flight] = store.leases.lease_lines("w", 1, now=T0)
    cancelling = store.cancel_batch("acme", batch.id, now=T0 + 1)
    assert cancelling.status is BatchStatus.CANCELLING
    assert cancelling.stamps[BatchStatus.CANCELLING] == T0 + 1
    assert store.leases.lease_lines("w", 9, now=T0 + 2) == []  # nothing new starts
    assert store.finalizer.advance(now=T0 + 3) == []
    assert store.leases.record_result(batch.id, in_flight.line_no, now=T0 + 4, response=ok())
    [cancelled] = store.finalizer.advance(now=T0 + 5)
    assert cancelled.status is BatchStatus.CANCELLED
    assert cancelled.stamps[BatchStatus.CANCELLED] == T0 + 5
    assert [line["custom_id"] for line in content(store, "acme", cancelled.output_file_id)] == [
        "req-0"
    ]
    errors = content(store, "acme", cancelled.error_file_id)
    assert [(e["custom_id"], e["error"]["code"]) for e in errors] == [
        ("req-1", "batch_cancelled"),
        ("req-2", "batch_cancelled"),
    ]
    assert store.cancel_batch("acme", batch.id, now=T0 + 6) == cancelled  # idempotent
    assert_counts_match_results(store, batch.id)


def test_cancel_with_nothing_in_flight_is_immediate_and_a_finished_batch_refuses(
    store: BatchStore,
) -> None:
    batch = start(store, 2)
    assert store.cancel_batch("acme", batch.id, now=T0 + 1).status is BatchStatus.CANCELLED
    other = start(store, 1)
    store.leases.record_result(other.id, 1, now=T0, response=ok())
    store.finalizer.advance(now=T0 + 1)
    with pytest.raises(IllegalTransition, match="completed"):
        store.cancel_batch("acme", other.id, now=T0 + 2)


def test_a_batch_cancelled_while_validating_never_gets_lines(store: BatchStore) -> None:
    file = upload(store, jsonl(2))
    batch = store.create_batch(
        "acme",
        input_file_id=file.id,
        endpoint=URL,
        completion_window="24h",
        window_s=86_400,
        metadata=None,
        now=T0,
    )
    cancelled = store.cancel_batch("acme", batch.id, now=T0 + 1)
    assert cancelled.status is BatchStatus.CANCELLED
    assert cancelled.output_file_id is None and cancelled.error_file_id is None
    assert store.validate_batch(batch.id, check_body, now=T0 + 2).status is BatchStatus.CANCELLED
    assert store.leases.line_states(batch.id)["pending"] == 0


def test_expiry_writes_batch_expired_records(store: BatchStore) -> None:
    batch = start(store, 4, window_s=60)
    store.leases.lease_lines("w", 2, now=T0)
    store.leases.record_result(batch.id, 1, now=T0 + 10, response=ok())
    assert store.finalizer.expire(now=T0 + 59) == []  # not yet
    assert store.leases.lease_lines("w", 9, now=T0 + 60) == []  # no line starts past it
    [expired] = store.finalizer.expire(now=T0 + 61)
    assert expired.status is BatchStatus.EXPIRED
    assert expired.stamps[BatchStatus.EXPIRED] == T0 + 61
    assert len(content(store, "acme", expired.output_file_id)) == 1
    errors = content(store, "acme", expired.error_file_id)
    assert [e["custom_id"] for e in errors] == ["req-1", "req-2", "req-3"]
    assert all(
        e["response"] is None
        and e["error"] == {"code": "batch_expired", "message": EXPIRED_MESSAGE}
        for e in errors
    )
    assert not store.leases.record_result(batch.id, 2, now=T0 + 62, response=ok())  # too late
    assert expired.counts.failed == 3
    assert_counts_match_results(store, batch.id)


def test_an_expiry_cut_short_still_ends_expired(
    store: BatchStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = start(store, 2, window_s=60)
    store.leases.record_result(batch.id, 1, now=T0 + 1, response=ok())

    def fail(self: FileBodies, file_id: str, chunks: Iterable[bytes]) -> int:
        raise OSError("killed")

    monkeypatch.setattr(FileBodies, "write", fail)
    with pytest.raises(OSError):
        store.finalizer.expire(now=T0 + 61)
    monkeypatch.undo()
    assert store.batch(batch.id).counts.unfinished == 0  # the fill committed
    [done] = store.finalizer.advance(now=T0 + 62)
    assert done.status is BatchStatus.EXPIRED


def test_a_batch_stuck_in_validation_expires(store: BatchStore) -> None:
    file = upload(store, jsonl(1))
    batch = store.create_batch(
        "acme",
        input_file_id=file.id,
        endpoint=URL,
        completion_window="60s",
        window_s=60,
        metadata=None,
        now=T0,
    )
    assert store.finalizer.advance(now=T0 + 30) == []
    [expired] = store.finalizer.advance(now=T0 + 60)
    assert expired.id == batch.id and expired.status is BatchStatus.EXPIRED


@pytest.mark.parametrize(
    ("text", "seconds"), [("24h", 86_400), ("90s", 90), ("30m", 1800), ("1h", 3600)]
)
def test_completion_windows(text: str, seconds: float) -> None:
    assert parse_window(text, minimum_s=60, maximum_s=86_400) == seconds


@pytest.mark.parametrize("text", ["30s", "25h", "24", "0h", "1d", " 24h", 24, None])
def test_refused_completion_windows(text: object) -> None:
    with pytest.raises(InvalidRequest) as refused:
        parse_window(text, minimum_s=60, maximum_s=86_400)
    assert refused.value.param == "completion_window"
