"""The Batch API over real HTTP, driven by the official ``openai`` SDK: upload, create (with
validation), retrieve, list, cancel, read results, delete; tenants kept apart; OpenAI errors.

The gateway runs in-process (``run_gateway`` in a thread, store on ``tmp_path``). No engine is
needed: running the lines is the dispatcher's job, so completion is tested at store level.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from scheduler.batches import BatchStatus, BatchStore, Purpose
from scheduler.config import GearshiftConfig, parse_config
from scheduler.state import FleetState
from scheduler.tenants import OPEN_TENANT, KeyFile
from scheduler.types import TrafficClass
from tests.integration.test_gateway_proxy import GatewayThread

pytestmark = pytest.mark.timeout(120)

MODEL = "qwen2.5-0.5b"
MAX_FILE_BYTES = 65_536


def _config(root: Path) -> GearshiftConfig:
    return parse_config(
        f"""
fleet:
  node_groups: [{{name: l4, accelerator: L4}}]
models: [{{name: {MODEL}, max_context: 4096}}]
gateway:
  load_refresh_s: 0.2
  auth: {{keys_file: {root / "keys.json"}}}
batch: {{store_path: {root / "batch"}, max_file_bytes: {MAX_FILE_BYTES}}}
"""
    )


def _jsonl(n: int, url: str = "/v1/chat/completions", **body: Any) -> bytes:
    lines = [
        {
            "custom_id": f"request-{i}",
            "method": "POST",
            "url": url,
            "body": {
                "model": MODEL,
                "messages": [{"role": "user", "content": f"Say {i}."}],
                "max_tokens": 8,
                **body,
            },
        }
        for i in range(n)
    ]
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayThread]:
    state = FleetState(version=1, endpoints=(), models=(MODEL,))
    with GatewayThread(_config(tmp_path), state) as running:
        yield running


def _client(gateway: GatewayThread, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0)


def test_the_openai_sdk_drives_files_and_batches(gateway: GatewayThread) -> None:
    client = _client(gateway)
    data = _jsonl(3)
    uploaded = client.files.create(file=("requests.jsonl", data), purpose="batch")
    assert uploaded.id.startswith("file-") and uploaded.object == "file"
    assert (uploaded.bytes, uploaded.filename, uploaded.purpose) == (
        len(data),
        "requests.jsonl",
        "batch",
    )
    assert client.files.retrieve(uploaded.id) == uploaded
    assert client.files.content(uploaded.id).read() == data

    batch = client.batches.create(
        input_file_id=uploaded.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"job": "nightly"},
    )
    assert batch.id.startswith("batch_") and batch.object == "batch"
    assert batch.status == "in_progress" and batch.errors is None
    assert batch.request_counts is not None and batch.request_counts.total == 3
    assert batch.metadata == {"job": "nightly"} and batch.model == MODEL
    assert batch.expires_at == batch.created_at + 86_400
    assert client.batches.retrieve(batch.id) == batch

    more = [
        client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        for _ in range(2)
    ]
    first_page = client.batches.list(limit=2)
    assert [b.id for b in first_page.data] == [more[1].id, more[0].id]
    assert first_page.has_more
    assert [b.id for b in client.batches.list(limit=2)] == [more[1].id, more[0].id, batch.id]
    assert [b.id for b in client.batches.list(after=more[0].id).data] == [batch.id]

    cancelled = client.batches.cancel(batch.id)
    assert cancelled.status == "cancelled"  # no line was in flight
    assert cancelled.cancelling_at is not None and cancelled.cancelled_at is not None
    assert cancelled.output_file_id is None and cancelled.error_file_id is not None
    errors = [
        json.loads(line)
        for line in client.files.content(cancelled.error_file_id).read().splitlines()
    ]
    assert [(e["custom_id"], e["error"]["code"], e["response"]) for e in errors] == [
        (f"request-{i}", "batch_cancelled", None) for i in range(3)
    ]
    assert client.batches.cancel(batch.id).status == "cancelled"  # idempotent

    listed = {f.id: f for f in client.files.list()}
    assert listed[cancelled.error_file_id].purpose == "batch_output"
    assert uploaded.id in listed
    deleted = client.files.delete(uploaded.id)
    assert (deleted.id, deleted.deleted) == (uploaded.id, True)
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(uploaded.id)
    with pytest.raises(openai.NotFoundError):
        client.files.content(uploaded.id)


def test_a_bad_input_file_fails_with_line_numbers(gateway: GatewayThread) -> None:
    client = _client(gateway)
    data = (
        _jsonl(1)
        + b"{not json\n"
        + _jsonl(1, stream=True).replace(b"request-0", b"request-2")
        + _jsonl(1, url="/v1/completions").replace(b"request-0", b"request-3")
        + _jsonl(1, temperature=9).replace(b"request-0", b"request-4")
        + _jsonl(1)
    )
    uploaded = client.files.create(file=("bad.jsonl", data), purpose="batch")
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    assert batch.status == "failed" and batch.failed_at is not None
    assert batch.errors is not None and batch.errors.data is not None
    assert [(e.line, e.code, e.param) for e in batch.errors.data] == [
        (2, "invalid_json_line", None),
        (3, "stream_not_supported", "body.stream"),
        (4, "invalid_url", "url"),
        (5, "invalid_value", "body.temperature"),
        (6, "duplicate_custom_id", "custom_id"),
    ]
    assert batch.request_counts is not None and batch.request_counts.total == 0
    unserved = client.files.create(
        file=("other.jsonl", _jsonl(1).replace(MODEL.encode(), b"not-served")), purpose="batch"
    )
    failed = client.batches.create(
        input_file_id=unserved.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    assert failed.errors is not None and failed.errors.data is not None
    assert [(e.line, e.code) for e in failed.errors.data] == [(1, "model_not_found")]


def test_openai_errors_for_bad_requests(gateway: GatewayThread) -> None:
    client = _client(gateway)
    with pytest.raises(openai.APIStatusError) as too_large:
        client.files.create(file=("big.jsonl", b"x" * (MAX_FILE_BYTES + 1)), purpose="batch")
    assert too_large.value.status_code == 413
    with pytest.raises(openai.BadRequestError) as purpose:
        client.files.create(file=("f.jsonl", b"{}\n"), purpose="fine-tune")
    assert purpose.value.body["param"] == "purpose"  # type: ignore[index]
    uploaded = client.files.create(file=("f.jsonl", _jsonl(1)), purpose="batch")
    for change, param in [
        ({"completion_window": "1s"}, "completion_window"),
        ({"completion_window": "48h"}, "completion_window"),
        ({"endpoint": "/v1/embeddings"}, "endpoint"),
        ({"metadata": {"k": 1}}, "metadata"),
        ({"extra_body": {"output_expires_after": {"seconds": 3600}}}, "output_expires_after"),
    ]:
        arguments: dict[str, Any] = {
            "input_file_id": uploaded.id,
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
            **change,
        }
        with pytest.raises(openai.BadRequestError) as refused:
            client.batches.create(**arguments)
        assert refused.value.body["param"] == param  # type: ignore[index]
    with pytest.raises(openai.NotFoundError) as missing:
        client.batches.create(
            input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h"
        )
    assert missing.value.body["param"] == "input_file_id"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_nope")
    with pytest.raises(openai.NotFoundError):
        client.batches.cancel("batch_nope")
    with pytest.raises(openai.BadRequestError):
        client.batches.list(limit=500)
    with pytest.raises(openai.BadRequestError):
        client.batches.list(after="batch_nope")
    short = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="90s"
    )
    assert short.expires_at == short.created_at + 90  # the shorter-window extension


def test_tenants_see_only_their_own(tmp_path: Path) -> None:
    keys = KeyFile(tmp_path / "keys.json")
    every = frozenset(TrafficClass)
    alice = keys.create(
        tenant="alice", classes=every, default_class=TrafficClass.STANDARD, rpm=None, tpm=None
    )
    mallory = keys.create(
        tenant="mallory", classes=every, default_class=TrafficClass.STANDARD, rpm=None, tpm=None
    )
    no_batch = keys.create(
        tenant="alice",
        classes=frozenset({TrafficClass.INTERACTIVE}),
        default_class=TrafficClass.INTERACTIVE,
        rpm=None,
        tpm=None,
    )
    state = FleetState(version=1, endpoints=(), models=(MODEL,))
    with GatewayThread(_config(tmp_path), state) as gateway:
        with pytest.raises(openai.AuthenticationError):
            _client(gateway, "gs-wrong").files.list()
        owner, other = _client(gateway, alice.plaintext), _client(gateway, mallory.plaintext)
        file = owner.files.create(file=("a.jsonl", _jsonl(2)), purpose="batch")
        batch = owner.batches.create(
            input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        for call in (
            lambda: other.files.retrieve(file.id),
            lambda: other.files.content(file.id),
            lambda: other.files.delete(file.id),
            lambda: other.batches.retrieve(batch.id),
            lambda: other.batches.cancel(batch.id),
            lambda: other.batches.create(
                input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
            ),
        ):
            with pytest.raises(openai.NotFoundError):
                call()
        assert other.files.list().data == [] and other.batches.list().data == []
        assert [b.id for b in owner.batches.list()] == [batch.id]
        assert owner.batches.retrieve(batch.id).status == "in_progress"  # untouched
        with pytest.raises(openai.PermissionDeniedError):
            _client(gateway, no_batch.plaintext).batches.create(
                input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
            )


def test_a_batch_left_validating_by_a_crash_is_validated_at_the_next_start(
    tmp_path: Path,
) -> None:
    config = _config(tmp_path)
    store = BatchStore.open(config.batch)
    try:  # what a gateway killed between create and validate leaves behind
        upload = store.create_file(
            OPEN_TENANT, "in.jsonl", Purpose.BATCH, io.BytesIO(_jsonl(3)), now=time.time()
        )
        left = store.create_batch(
            OPEN_TENANT,
            input_file_id=upload.id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            window_s=86_400,
            metadata=None,
            now=time.time(),
        )
        assert left.status is BatchStatus.VALIDATING
    finally:
        store.close()
    with GatewayThread(config, FleetState(version=1, models=(MODEL,))) as gateway:
        client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused")
        deadline = time.monotonic() + 10
        while (batch := client.batches.retrieve(left.id)).status == "validating":
            assert time.monotonic() < deadline, "the pending batch was never validated"
            time.sleep(0.1)
        assert batch.status == "in_progress"
        assert batch.request_counts is not None and batch.request_counts.total == 3
