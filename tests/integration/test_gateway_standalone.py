"""A gateway scaled out from the controller (`gearshift gateway`): it drains on shutdown
(/ready answers 503 while requests are still served) and, without the batch store, relays
/v1/files and /v1/batches to the gateway that holds it. Gateways run in-process
(``run_gateway`` in a thread); no engine is needed."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import openai
import pytest

from scheduler.cli.gateway_cmd import _storeless
from scheduler.config import GearshiftConfig, parse_config
from scheduler.state import FleetState
from tests.integration.test_gateway_proxy import GatewayThread

pytestmark = pytest.mark.timeout(120)

MODEL = "qwen2.5-0.5b"


def _config(root: Path, **gateway: object) -> GearshiftConfig:
    extra = "".join(f"  {key}: {json.dumps(value)}\n" for key, value in gateway.items())
    return parse_config(
        f"""
fleet:
  node_groups: [{{name: l4, accelerator: L4}}]
models: [{{name: {MODEL}, max_context: 4096}}]
gateway:
  load_refresh_s: 0.2
{extra}batch: {{store_path: {root / "batch"}}}
"""
    )


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_on_shutdown_ready_answers_503_while_requests_are_still_served(tmp_path: Path) -> None:
    config = _config(tmp_path, shutdown_drain_s=1.5)
    gateway = GatewayThread(config, FleetState(version=1, models=(MODEL,)))
    with gateway:
        gateway.request_stop()
        time.sleep(0.3)
        try:
            urllib.request.urlopen(f"{gateway.url}/ready", timeout=5)
            raise AssertionError("/ready must answer 503 while draining")
        except urllib.error.HTTPError as exc:
            assert exc.code == 503
            assert json.loads(exc.read())["status"] == "draining"
        assert _get(f"{gateway.url}/v1/models") == 200, "still serving while it drains"
        started = time.monotonic()
        gateway.wait_stopped(10)
        assert time.monotonic() - started < 3.0


def test_a_storeless_gateway_relays_the_batch_api_to_the_one_that_holds_the_store(
    tmp_path: Path,
) -> None:
    holder = GatewayThread(_config(tmp_path), FleetState(version=1, models=(MODEL,)))
    with holder:
        relay_config = _storeless(_config(tmp_path / "relay"), holder.url)
        assert relay_config.batch.enabled is False
        relay = GatewayThread(relay_config, FleetState(version=1, models=(MODEL,)))
        with relay:
            client = openai.OpenAI(base_url=f"{relay.url}/v1", api_key="unused", max_retries=0)
            uploaded = client.files.create(file=("in.jsonl", b'{"a": 1}\n'), purpose="batch")
            direct = openai.OpenAI(base_url=f"{holder.url}/v1", api_key="unused")
            assert direct.files.retrieve(uploaded.id).bytes == len(b'{"a": 1}\n')
            assert client.files.content(uploaded.id).content == b'{"a": 1}\n'
            assert [f.id for f in client.files.list().data] == [uploaded.id]
            with pytest.raises(openai.NotFoundError) as missing:
                client.batches.retrieve("batch_missing")
            assert missing.value.status_code == 404
    assert not (tmp_path / "relay" / "batch").exists(), "the relay opened no store"


def test_a_relay_whose_upstream_is_down_answers_502_with_an_envelope(tmp_path: Path) -> None:
    config = _storeless(_config(tmp_path), "http://127.0.0.1:9")
    relay = GatewayThread(config, FleetState(version=1, models=(MODEL,)))
    with relay:
        try:
            urllib.request.urlopen(f"{relay.url}/v1/batches", timeout=10)
            raise AssertionError("expected 502")
        except urllib.error.HTTPError as exc:
            assert exc.code == 502
            assert json.loads(exc.read())["error"]["code"] == "batch_upstream_unreachable"
