"""Machines that join on their own: `gearshift node start` a head and a worker on loopback,
then `gearshift serve --address` places a replica on the joined worker, and `gearshift
inventory` shows the worker with the operator's price, ownership and labels."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.integration.serve_process import GEARSHIFT, free_port, start_serve, wait_for

pytestmark = [pytest.mark.ray, pytest.mark.e2e, pytest.mark.timeout(600)]

MODELS = """
models:
  - {name: qwen2.5-0.5b, max_context: 4096, replicas: 1, accelerators: [CPU]}
"""


def _gearshift(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(GEARSHIFT), *args], capture_output=True, text=True, timeout=120, env=env
    )


@pytest.fixture
def cluster() -> Iterator[str]:
    port = free_port()
    address = f"127.0.0.1:{port}"
    head = _gearshift("node", "start", "--head", "--port", str(port), "--node-ip-address",
                      "127.0.0.1", "--node-id", "head")  # fmt: skip
    try:
        assert head.returncode == 0, head.stderr
        worker = _gearshift(
            "node", "start", "--address", address, "--node-ip-address", "127.0.0.1",
            "--node-id", "box-1", "--price", "0.05", "--ownership", "owned",
            "--labels", "zone=lab,rack=r7",
        )  # fmt: skip
        assert worker.returncode == 0, worker.stderr
        yield address
    finally:
        _gearshift("node", "stop")


def test_bad_join_requests_are_one_line_errors() -> None:
    both = _gearshift("node", "start", "--head", "--address", "127.0.0.1:1", "--dry-run")
    assert both.returncode == 2 and "exactly one of --head and --address" in both.stderr
    label = _gearshift("node", "start", "--head", "--labels", "gearshift.io/role=x", "--dry-run")
    assert label.returncode == 2 and "reserved" in label.stderr


def test_joined_worker_serves_and_is_in_the_inventory(cluster: str, tmp_path: Path) -> None:
    config = tmp_path / "models.yaml"
    config.write_text(MODELS)
    serve = start_serve(tmp_path, config, extra=("--address", cluster))
    try:
        (replica,) = serve.status()["replicas"]
        assert replica["node_id"] == replica["placed_on"] == "box-1"
        client = openai.OpenAI(base_url=f"{serve.base_url}/v1", api_key="unused", max_retries=0)
        raw = client.completions.with_raw_response.create(
            model="qwen2.5-0.5b", prompt="hello", max_tokens=2
        )
        assert raw.headers["x-gearshift-accelerator"] == "CPU"

        env = {**os.environ, "GEARSHIFT_SESSION_FILE": str(serve.session_file)}
        listed = _gearshift("inventory", "-o", "json", env=env)
        assert listed.returncode == 0, listed.stderr
        (node,) = json.loads(listed.stdout)  # the head runs the controller only
        assert node["node_id"] == "box-1"
        assert (node["price_per_hour"], node["ownership"], node["alive"]) == (0.05, "owned", True)
        assert node["labels"] == {"zone": "lab", "rack": "r7"}
        assert node["accelerators_used"] == 1

        _a_scaled_out_gateway_serves_the_same_fleet(cluster, config, tmp_path)
    finally:
        assert serve.stop() == 0, serve.output()


def _a_scaled_out_gateway_serves_the_same_fleet(
    cluster: str, config: Path, tmp_path: Path
) -> None:
    """`gearshift gateway` reads the endpoint table from serve's controller and proxies to
    the same engines; SIGTERM stops it cleanly."""
    port = free_port()
    log = tmp_path / "gateway.log"
    argv = [str(GEARSHIFT), "gateway", "--address", cluster, "--config", str(config),
            "--port", str(port), "--admin-port", str(free_port())]  # fmt: skip
    env = {**os.environ, "GEARSHIFT_ADMIN_TOKEN": "a" * 24}
    with log.open("wb") as out:
        gateway = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _ready(url), 60, f"the gateway to be ready ({log.read_text()})")
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        raw = client.completions.with_raw_response.create(
            model="qwen2.5-0.5b", prompt="hello", max_tokens=2
        )
        assert raw.headers["x-gearshift-replica"].startswith("qwen2.5-0.5b")
        gateway.send_signal(signal.SIGTERM)
        assert gateway.wait(30) == 0, log.read_text()
    finally:
        if gateway.poll() is None:
            gateway.kill()
            gateway.wait(10)


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/ready", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False
