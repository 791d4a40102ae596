"""The Batch API end to end against ``gearshift serve`` (a small simulated fleet on a loopback
Ray cluster, API keys on): the official ``openai`` SDK uploads a file, creates a batch, polls it
to ``completed`` and downloads one result per ``custom_id``, run by the dispatcher serve starts
(with its internal credential, acting as the batch's key). ``gearshift batch`` does the same as
a user would; a SIGKILLed dispatcher is restarted by serve, and Ctrl-C leaves no process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from scheduler.tenants import KeyFile
from scheduler.types import TrafficClass
from tests.integration.serve_process import (
    GEARSHIFT,
    ServeProcess,
    descendants,
    start_serve,
    survivors,
    wait_for,
)

pytestmark = [pytest.mark.ray, pytest.mark.e2e, pytest.mark.timeout(600)]

MODEL = "qwen2.5-0.5b"
TERMINAL = {"completed", "failed", "expired", "cancelled"}


def _config(root: Path) -> Path:
    path = root / "fleet.yaml"
    path.write_text(
        f"""
fleet:
  node_groups:
    - {{name: l4, accelerator: L4, nodes: 1, price_per_node_hour: 0.29, ownership: spot}}
models:
  - {{name: {MODEL}, max_context: 4096, replicas: 1}}
gateway:
  auth: {{keys_file: {root / "keys.json"}}}
batch: {{store_path: {root / "batch"}, lease_s: 5, heartbeat_s: 1}}
"""
    )
    return path


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("batch-e2e")


@pytest.fixture(scope="module")
def key(root: Path) -> str:
    return (
        KeyFile(root / "keys.json")
        .create(
            tenant="acme",
            classes=frozenset({TrafficClass.STANDARD, TrafficClass.BATCH}),
            default_class=TrafficClass.STANDARD,
            rpm=None,
            tpm=None,
        )
        .plaintext
    )


@pytest.fixture(scope="module")
def serve(root: Path, key: str) -> Iterator[ServeProcess]:
    process = start_serve(root, _config(root))
    started: dict[int, str] = {}
    try:
        wait_for(lambda: _dispatchers(process), 60, "serve to start the batch dispatcher")
        started = descendants(process.process.pid)
        yield process
    finally:
        started.update(descendants(process.process.pid))
        code = process.stop()
        assert code == 0, process.output()
        left = survivors(started)
        assert not left, f"processes outlived gearshift serve: {left}"


@pytest.fixture(scope="module")
def client(serve: ServeProcess, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{serve.base_url}/v1", api_key=key, max_retries=0)


def _dispatchers(serve: ServeProcess) -> list[int]:
    found = []
    for pid in descendants(serve.process.pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"scheduler.batches.worker" in cmdline:
            found.append(pid)
    return found


def _requests(n: int, prefix: str) -> bytes:
    return b"".join(
        json.dumps(
            {
                "custom_id": f"{prefix}-{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": MODEL,
                    "messages": [{"role": "user", "content": f"Say {i}."}],
                    "max_tokens": 8,
                },
            }
        ).encode()
        + b"\n"
        for i in range(n)
    )


def _wait_done(client: openai.OpenAI, batch_id: str, timeout_s: float = 120) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        batch = client.batches.retrieve(batch_id)
        if batch.status in TERMINAL:
            return batch
        time.sleep(0.5)
    raise AssertionError(f"batch {batch_id} still {batch.status} after {timeout_s} s")


def _rows(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [json.loads(row) for row in client.files.content(file_id).read().splitlines()]


def test_the_openai_sdk_runs_a_batch_to_completion(client: openai.OpenAI) -> None:
    uploaded = client.files.create(file=("in.jsonl", _requests(40, "sdk")), purpose="batch")
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    assert batch.status == "in_progress"
    done = _wait_done(client, batch.id)
    assert done.status == "completed", done
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed) == (40, 40)
    rows = _rows(client, done.output_file_id)
    assert sorted(row["custom_id"] for row in rows) == sorted(f"sdk-{i}" for i in range(40))
    for row in rows:
        assert row["error"] is None and row["response"]["status_code"] == 200
        body = row["response"]["body"]
        assert body["choices"][0]["message"]["content"] and body["service_tier"] == "flex"
    assert done.error_file_id is None


def test_the_cli_submits_waits_and_downloads(serve: ServeProcess, key: str, root: Path) -> None:
    path = root / "cli.jsonl"
    path.write_bytes(_requests(10, "cli"))
    env = {
        **os.environ,
        "GEARSHIFT_SESSION_FILE": str(serve.session_file),
        "GEARSHIFT_API_KEY": key,
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [str(GEARSHIFT), "batch", *args]
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=180)

    submitted = run("submit", str(path), "--wait", "--metadata", "run=e2e", "-o", "json")
    assert submitted.returncode == 0, submitted.stderr
    batch = json.loads(submitted.stdout)
    assert batch["status"] == "completed" and batch["metadata"] == {"run": "e2e"}
    assert f"gearshift batch results {batch['id']}" in submitted.stderr
    out = root / "cli-results.jsonl"
    downloaded = run("results", batch["id"], "-o", str(out))
    assert downloaded.returncode == 0, downloaded.stderr
    ids = sorted(json.loads(row)["custom_id"] for row in out.read_text().splitlines())
    assert ids == sorted(f"cli-{i}" for i in range(10))
    listed = json.loads(run("ls", "-o", "json").stdout)
    assert batch["id"] in {b["id"] for b in listed["data"]}


def test_serve_restarts_a_killed_dispatcher(serve: ServeProcess, client: openai.OpenAI) -> None:
    [first] = _dispatchers(serve)
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: [pid for pid in _dispatchers(serve) if pid != first], 30, "a new dispatcher")
    assert "exited with code -9" in serve.output()
    uploaded = client.files.create(file=("again.jsonl", _requests(5, "again")), purpose="batch")
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    done = _wait_done(client, batch.id)
    assert done.status == "completed"
    assert len(_rows(client, done.output_file_id)) == 5
