"""The batch dispatcher as the process ``gearshift serve`` runs (``python -m
scheduler.batches.worker``) against a fake gateway on loopback: every line sent with its
dispatcher credential, ``service_tier: flex`` and ``stream: false``; one result per line;
SIGTERM releases the lines in flight; the worker never outlives its parent.

``FakeGatewayServer`` (also used by ``test_batch_crash``) stands in for the gateway's public
endpoint: it answers chat completions itself, at once or after a delay, refuses some with 503
and some lines with 400, and records every request.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from scheduler.batches import BatchRecord, BatchStatus, BatchStore, Purpose
from scheduler.batches.dispatch_credentials import TOKEN_ENV, credential, new_token
from scheduler.config import load_config
from tests.integration.serve_process import pid_alive, wait_for

pytestmark = pytest.mark.timeout(120)

URL = "/v1/chat/completions"
ACCELERATOR = "FAKE-GPU"


@dataclass
class Seen:
    custom_id: str
    status: int
    tier: str
    stream: object
    authorization: str | None


@dataclass
class FakeGatewayServer:
    """Chat completions on 127.0.0.1 in a thread of its own. A line's ``custom_id`` is its
    message content; contents starting with ``bad`` get a 400; ``refuse_rate`` of requests get
    503 (seeded); answers take ``latency_s`` (a range), or until ``released`` when ``hold``."""

    token: str | None = None
    latency_s: tuple[float, float] = (0.0, 0.0)
    refuse_rate: float = 0.0
    seed: int = 0
    hold: bool = False
    seen: list[Seen] = field(default_factory=list)
    in_flight: int = 0
    url: str = ""

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._lock = threading.Lock()
        self._started = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._released: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    def served(self) -> Counter[str]:
        """Answers that executed the line (200 and 400), per custom_id."""
        with self._lock:
            return Counter(s.custom_id for s in self.seen if s.status in (200, 400))

    def release(self) -> None:
        assert self._loop is not None and self._released is not None
        self._loop.call_soon_threadsafe(self._released.set)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop, self._released = asyncio.Event(), asyncio.Event()
        app = web.Application()
        app.router.add_post(URL, self._chat)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        self._started.set()
        await self._stop.wait()
        await runner.cleanup()

    async def _chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        custom_id = body["messages"][0]["content"]
        authorization = request.headers.get("Authorization")
        with self._lock:
            refuse = self._rng.random() < self.refuse_rate
            delay = self._rng.uniform(*self.latency_s)
        status = 200
        if self.token is not None and authorization != f"Bearer {credential(self.token, None)}":
            status = 401
        elif refuse:
            status = 503
        elif custom_id.startswith("bad"):
            status = 400
        self.in_flight += 1
        try:
            if status in (200, 400):
                if self.hold and self._released is not None:
                    await self._released.wait()
                await asyncio.sleep(delay)
        finally:
            self.in_flight -= 1
        with self._lock:
            self.seen.append(
                Seen(custom_id, status, body.get("service_tier"), body.get("stream"), authorization)
            )
        headers = {"x-request-id": f"req-{len(self.seen)}"}
        if status == 200:
            headers["x-gearshift-accelerator"] = ACCELERATOR
            answer = {
                "object": "chat.completion",
                "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": custom_id}}],
                "service_tier": body.get("service_tier"),
            }
            return web.json_response(answer, headers=headers)
        if status == 503:
            headers["Retry-After"] = "0"
        error = {"message": f"HTTP {status}", "type": "x", "param": None, "code": None}
        return web.json_response({"error": error}, status=status, headers=headers)

    def __enter__(self) -> FakeGatewayServer:
        self._thread.start()
        assert self._started.wait(10), "the fake gateway did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self.release()
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


def write_config(tmp: Path, **batch: Any) -> Path:
    settings = {"store_path": str(tmp / "store"), "lease_s": 2.0, "heartbeat_s": 0.25, **batch}
    path = tmp / "config.yaml"
    path.write_text(json.dumps({"batch": settings}))
    return path


def open_store(config_path: Path) -> BatchStore:
    return BatchStore.open(load_config(config_path).batch, mounts="")


def input_file(ids: list[str]) -> bytes:
    return b"".join(
        json.dumps(
            {
                "custom_id": custom_id,
                "method": "POST",
                "url": URL,
                "body": {
                    "model": "m",
                    "max_tokens": 4,
                    "messages": [{"role": "user", "content": custom_id}],
                },
            }
        ).encode()
        + b"\n"
        for custom_id in ids
    )


def create_batch(store: BatchStore, ids: list[str], window_s: float = 86_400.0) -> BatchRecord:
    now = time.time()
    data = input_file(ids)
    file = store.create_file("_open", "in.jsonl", Purpose.BATCH, io.BytesIO(data), now=now)
    batch = store.create_batch(
        "_open",
        input_file_id=file.id,
        endpoint=URL,
        completion_window="24h",
        window_s=window_s,
        metadata=None,
        now=now,
    )
    return store.validate_batch(batch.id, lambda endpoint, body: "m", now=now)


def start_worker(
    config: Path,
    gateway_url: str,
    log: Path,
    *,
    token: str | None = None,
    max_in_flight: int = 8,
    extra: tuple[str, ...] = (),
) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "scheduler.batches.worker", "--config", str(config)]
    argv += ["--gateway-url", gateway_url, "--max-in-flight", str(max_in_flight), *extra]
    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    if token is not None:
        env[TOKEN_ENV] = token
    with log.open("ab") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)


def results(store: BatchStore, batch: BatchRecord) -> tuple[list[Any], list[Any]]:
    def read(file_id: str | None) -> list[Any]:
        if file_id is None:
            return []
        _, handle = store.open_content(batch.tenant, file_id)
        with handle:
            return [json.loads(line) for line in handle.read().splitlines()]

    return read(batch.output_file_id), read(batch.error_file_id)


def terminal(store: BatchStore, batch_id: str) -> BatchRecord | None:
    batch = store.batch(batch_id)
    return batch if batch.status.terminal else None


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(tmp_path)


@pytest.fixture
def store(config: Path) -> Iterator[BatchStore]:
    opened = open_store(config)
    yield opened
    opened.close()


def test_the_worker_runs_every_line_through_the_gateway_with_its_credential(
    tmp_path: Path, config: Path, store: BatchStore
) -> None:
    token = new_token()
    ids = [f"bad-{i}" if i % 25 == 0 else f"line-{i}" for i in range(200)]
    batch = create_batch(store, ids)
    log = tmp_path / "worker.log"
    with FakeGatewayServer(token=token, latency_s=(0.0, 0.01)) as gateway:
        worker = start_worker(config, gateway.url, log, token=token)
        try:
            done = wait_for(lambda: terminal(store, batch.id), 60, "the batch to complete")
        finally:
            worker.send_signal(signal.SIGTERM)
            code = worker.wait(20)
    assert code == 0, log.read_text()
    assert done.status is BatchStatus.COMPLETED
    output, errors = results(store, done)
    assert sorted(r["custom_id"] for r in output + errors) == sorted(ids)
    assert {r["custom_id"] for r in errors} == {i for i in ids if i.startswith("bad")}
    assert {r["response"]["status_code"] for r in errors} == {400}
    assert {r["response"]["body"]["service_tier"] for r in output} == {"flex"}
    assert {(s.tier, s.stream) for s in gateway.seen} == {("flex", False)}
    assert {s.authorization for s in gateway.seen} == {f"Bearer {credential(token, None)}"}
    text = log.read_text()
    assert f"served by {{'{ACCELERATOR}': 192}}" in text and "stopped" in text
    assert token not in text


def test_sigterm_releases_the_lines_in_flight(
    tmp_path: Path, config: Path, store: BatchStore
) -> None:
    batch = create_batch(store, [f"line-{i}" for i in range(50)])
    log = tmp_path / "worker.log"
    with FakeGatewayServer(hold=True) as gateway:
        worker = start_worker(config, gateway.url, log, max_in_flight=4)
        wait_for(lambda: gateway.in_flight == 4, 30, "four lines in flight")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(10) == 0, log.read_text()
    assert "released 4 leased lines" in log.read_text()
    assert store.leases.line_states(batch.id) == {"pending": 50, "leased": 0, "done": 0}


def test_the_worker_stops_when_its_parent_is_gone(tmp_path: Path, config: Path) -> None:
    log = tmp_path / "worker.log"
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, subprocess, sys, time\n"
            "argv = [sys.executable, '-m', 'scheduler.batches.worker', '--config', sys.argv[1],"
            " '--gateway-url', 'http://127.0.0.1:9', '--parent-pid', str(os.getpid())]\n"
            "child = subprocess.Popen(argv, stderr=open(sys.argv[2], 'ab'))\n"
            "print(child.pid, flush=True)\n"
            "time.sleep(120)\n",
            str(config),
            str(log),
        ],
        stdout=subprocess.PIPE,
    )
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    wait_for(lambda: "running" in log.read_text(), 30, "the worker to run")
    parent.kill()
    parent.wait()
    wait_for(lambda: not _running(child), 10, "the worker to stop")
    assert "parent process" in log.read_text() or "stopped" in log.read_text()


def _running(pid: int) -> bool:
    """Alive and not a zombie waiting for a reaper."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return pid_alive(pid) and state != "Z"
