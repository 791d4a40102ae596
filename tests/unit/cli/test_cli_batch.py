"""``gearshift batch submit | status | ls | cancel | results`` against the gateway's real Batch
API routes (in process: the SDK's transport calls the Starlette app, no socket) over a store on
disk: tables and ``-o json|yaml``, ``--wait`` until the batch ends, results to stdout or a file,
and one line with exit 2 for bad input."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
import yaml
from starlette.applications import Starlette
from starlette.testclient import TestClient
from typer.testing import CliRunner, Result

from scheduler.batches import BatchStore, LineResponse
from scheduler.cli import app, batch_cmd
from scheduler.cli.session_file import ServeSession, write
from scheduler.config import AuthConfig, BatchConfig, GatewayConfig
from scheduler.gateway.auth import GatewayAuth
from scheduler.gateway.batch_api import batch_routes
from scheduler.gateway.endpoints import EndpointTable, StaticFleetState
from scheduler.state import FleetState
from scheduler.tenants import KeyFile
from scheduler.types import TrafficClass

MODEL = "m"
URL = "http://gateway.test"


def line(custom_id: str, model: str = MODEL) -> str:
    body = {"model": model, "messages": [{"role": "user", "content": custom_id}], "max_tokens": 4}
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
                       "body": body})  # fmt: skip


class Gateway:
    """The Batch API routes over a store in ``root``; ``clients`` made for it by the CLI."""

    def __init__(self, root: Path, auth: GatewayAuth | None = None) -> None:
        self.store = BatchStore.open(BatchConfig(store_path=str(root / "store")), mounts="")
        table = EndpointTable(StaticFleetState(FleetState(version=1, models=(MODEL,))))
        table.state = FleetState(version=1, models=(MODEL,))
        routes = batch_routes(self.store, GatewayConfig(), table, auth or GatewayAuth.open())
        self.http = TestClient(Starlette(routes=routes))
        self.keys: list[str | None] = []

    def client(self, base_url: str, api_key: str | None) -> openai.OpenAI:
        assert base_url == URL
        self.keys.append(api_key)
        transport = httpx2.MockTransport(self._handle)
        return openai.OpenAI(
            base_url=f"{base_url}/v1",
            api_key=api_key or "unused",
            max_retries=0,
            http_client=httpx2.Client(transport=transport),
        )

    def _handle(self, request: httpx2.Request) -> httpx2.Response:
        answer = self.http.request(
            request.method,
            request.url.raw_path.decode(),
            headers=dict(request.headers),
            content=request.read(),
        )
        return httpx2.Response(
            answer.status_code, headers=answer.headers.multi_items(), content=answer.content
        )

    def finish(self, batch_id: str, fail_every: int = 0) -> None:
        """Run every line as a dispatcher would (every ``fail_every``-th answered 400)."""
        now = time.time()
        for leased in self.store.leases.lease_lines("w", 10_000, now=now, batch_id=batch_id):
            bad = fail_every and leased.line_no % fail_every == 0
            status, body = (400, {"error": {"message": "no"}}) if bad else (200, {"ok": 1})
            self.store.leases.record_result(
                batch_id,
                leased.line_no,
                now=now,
                response=LineResponse(status, f"req-{leased.line_no}", body),
            )
        self.store.finalizer.advance(now=now)


@pytest.fixture
def gateway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Gateway]:
    running = Gateway(tmp_path)
    monkeypatch.setattr(batch_cmd, "openai_client", running.client)
    monkeypatch.setenv("GEARSHIFT_SESSION_FILE", str(tmp_path / "serve.json"))
    monkeypatch.delenv("GEARSHIFT_API_KEY", raising=False)
    write(tmp_path / "serve.json", ServeSession(1, URL, "http://admin.test", "t" * 20))
    yield running
    running.store.close()


@pytest.fixture
def requests(tmp_path: Path) -> Path:
    path = tmp_path / "requests.jsonl"
    path.write_text("".join(line(f"r{i}") + "\n" for i in range(5)))
    return path


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, ["batch", *args])


def submitted(result: Result) -> dict[str, Any]:
    assert result.exit_code == 0, result.output
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def test_submit_uploads_and_creates_a_batch(gateway: Gateway, requests: Path) -> None:
    result = invoke("submit", str(requests), "--metadata", "team=search", "--metadata", "x=1")
    assert result.exit_code == 0, result.output
    assert "in_progress" in result.stdout and "0 completed, 0 failed of 5" in result.stdout
    assert "metadata.team" in result.stdout
    document = submitted(invoke("submit", str(requests), "--window", "2h", "-o", "json"))
    assert document["status"] == "in_progress" and document["completion_window"] == "2h"
    assert document["request_counts"]["total"] == 5
    batch = gateway.store.batch(document["id"])
    assert batch.model == MODEL and batch.expires_at - batch.created_at == 7200


def test_submit_wait_follows_the_batch_until_it_ends(
    gateway: Gateway, requests: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    polls: list[float] = []

    def pause(seconds: float) -> None:  # the dispatcher runs the lines meanwhile
        polls.append(seconds)
        batch_id = gateway.store.list_batches("_open", limit=1).items[0].id
        gateway.finish(batch_id, fail_every=5)

    monkeypatch.setattr(batch_cmd, "poll_pause", pause)
    result = invoke("submit", str(requests), "--wait", "--poll-interval", "0.5", "-o", "yaml")
    assert result.exit_code == 0, result.output
    document = yaml.safe_load(result.stdout)
    assert document["status"] == "completed" and polls == [0.5]
    assert document["request_counts"] == {"total": 5, "completed": 4, "failed": 1}
    assert f"gearshift batch results {document['id']} -o results.jsonl" in result.stderr
    assert f"gearshift batch results {document['id']} --errors" in result.stderr


def test_a_file_that_fails_validation_shows_its_errors(gateway: Gateway, tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(line("a") + "\n" + line("a") + "\n{not json\n" + line("b", "other") + "\n")
    result = invoke("submit", str(path), "--wait")
    assert result.exit_code == 1
    assert "failed" in result.stdout and "Validation errors (3)" in result.stdout
    assert "failed validation: no line ran" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["submit", "missing.jsonl"], "no such file: missing.jsonl"),
        (["submit", "{requests}", "--metadata", "novalue"], "bad --metadata 'novalue'"),
        (["submit", "{requests}", "--window", "3d"], "HTTP 400: `completion_window` must be"),
        (["submit", "{requests}", "--endpoint", "/v1/embeddings"], "HTTP 400: `endpoint`"),
        (["status", "batch_nope"], "HTTP 404: No such batch: `batch_nope`."),
        (["cancel", "batch_nope"], "HTTP 404: No such batch"),
        (["results", "batch_nope"], "HTTP 404: No such batch"),
        (["ls", "--after", "batch_nope"], "HTTP 400: `after` names no"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    gateway: Gateway, requests: Path, args: list[str], message: str
) -> None:
    result = invoke(*(a.replace("{requests}", str(requests)) for a in args))
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_status_ls_and_cancel(gateway: Gateway, requests: Path) -> None:
    ids = [submitted(invoke("submit", str(requests), "-o", "json"))["id"] for _ in range(3)]
    status = yaml.safe_load(invoke("status", ids[0], "-o", "yaml").stdout)
    assert status["id"] == ids[0] and status["status"] == "in_progress"
    assert f"Batch {ids[0]}" in invoke("status", ids[0]).stdout
    listed = json.loads(invoke("ls", "--limit", "2", "-o", "json").stdout)
    assert [b["id"] for b in listed["data"]] == ids[:0:-1] and listed["has_more"]
    table = invoke("ls", "--limit", "2")
    assert ids[2] in table.stdout and f"--after {ids[1]}" in table.stderr
    older = json.loads(invoke("ls", "--after", ids[1], "-o", "json").stdout)
    assert [b["id"] for b in older["data"]] == [ids[0]] and not older["has_more"]
    cancelled = json.loads(invoke("cancel", ids[1], "-o", "json").stdout)
    assert cancelled["status"] == "cancelled"  # nothing was in flight
    assert cancelled["request_counts"] == {"total": 5, "completed": 0, "failed": 5}


def test_results_to_stdout_or_a_file(gateway: Gateway, requests: Path, tmp_path: Path) -> None:
    batch_id = submitted(invoke("submit", str(requests), "-o", "json"))["id"]
    early = invoke("results", batch_id)
    assert early.exit_code == 1 and "is in_progress: its files are written when it ends" in (
        early.stderr
    )
    gateway.finish(batch_id)
    result = invoke("results", batch_id)
    assert result.exit_code == 0, result.output
    rows = [json.loads(row) for row in result.stdout.splitlines()]
    assert sorted(row["custom_id"] for row in rows) == [f"r{i}" for i in range(5)]
    out = tmp_path / "out.jsonl"
    written = invoke("results", batch_id, "-o", str(out))
    assert written.exit_code == 0 and "Wrote 5 lines" in written.stderr
    assert out.read_text() == result.stdout
    none = invoke("results", batch_id, "--errors")
    assert none.exit_code == 1 and "has no error file: no line failed" in none.stderr


def test_without_a_running_serve_it_says_how_to_point_at_one(
    gateway: Gateway, requests: Path, tmp_path: Path
) -> None:
    (tmp_path / "serve.json").unlink()
    result = invoke("status", "batch_x")
    assert result.exit_code == 1
    assert "no running `gearshift serve` found" in result.stderr and "--url" in result.stderr
    assert invoke("status", "batch_x", "--url", URL).exit_code == 2  # reached: a 404


def test_keys_come_from_the_option_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, requests: Path
) -> None:
    keys = KeyFile(tmp_path / "keys.json")
    key = keys.create(
        tenant="acme",
        classes=frozenset({TrafficClass.STANDARD, TrafficClass.BATCH}),
        default_class=TrafficClass.STANDARD,
        rpm=None,
        tpm=None,
    ).plaintext
    auth = GatewayAuth.from_config(AuthConfig(keys_file=str(keys.path)))
    running = Gateway(tmp_path, auth)
    monkeypatch.setattr(batch_cmd, "openai_client", running.client)
    monkeypatch.delenv("GEARSHIFT_API_KEY", raising=False)
    refused = invoke("submit", str(requests), "--url", URL)
    assert refused.exit_code == 2 and "pass --api-key or set GEARSHIFT_API_KEY" in refused.stderr
    assert invoke("submit", str(requests), "--url", URL, "--api-key", key).exit_code == 0
    monkeypatch.setenv("GEARSHIFT_API_KEY", key)
    listed = json.loads(invoke("ls", "--url", URL, "-o", "json").stdout)
    assert len(listed["data"]) == 1
    assert running.keys == [None, key, key]
    running.store.close()
