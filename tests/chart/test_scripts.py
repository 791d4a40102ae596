"""The chart's small programs (helm/gearshift/files) do what the pods rely on: the worker's
rendered command joins with `gearshift node start`'s declaration and Ray in the foreground,
render-config merges the token safely, and the `helm test` check tells a healthy gateway from a
broken one (against a loopback HTTP server)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from tests.chart.rendering import CHART, Renderer, one

pytestmark = pytest.mark.chart

SCRIPTS = CHART / "files"
IN_POD = "/opt/gearshift/scripts"


@pytest.fixture(scope="module")
def worker_commands(renderer: Renderer) -> dict[str, list[str]]:
    """The `ray start` command of three worker groups (run side by side: each one starts the
    gearshift CLI)."""
    groups = ["l4", "a100", "cpu"]
    with ThreadPoolExecutor(len(groups)) as pool:
        commands = list(pool.map(lambda g: _worker_command(renderer, g), groups))
    return dict(zip(groups, commands, strict=True))


def _worker_command(renderer: Renderer, group: str) -> list[str]:
    """Run a worker container's rendered script here, with --print-only: the `ray start`
    command the pod would exec."""
    cluster = one(renderer.objects("three-gpu-cpu"), "RayCluster")
    spec = next(g for g in cluster["spec"]["workerGroupSpecs"] if g["groupName"] == group)
    container = spec["template"]["spec"]["containers"][0]
    assert container["command"] == ["/bin/bash", "-c"]
    script = container["args"][0].replace(IN_POD, str(SCRIPTS))
    script = script.replace("ray-node.py", "ray-node.py --print-only", 1)
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "RAY_ADDRESS": "rel-gearshift-head-svc.llm.svc.cluster.local:6379",
        "NODE_NAME": "gpu-node-7",
        "POD_NAME": f"rel-gearshift-{group}-worker-abcde",
        "HOME": os.environ.get("HOME", "/tmp"),
    }
    result = subprocess.run(
        ["/bin/bash", "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    command: list[str] = json.loads(result.stdout)
    return command


def _labels(command: list[str]) -> dict[str, str]:
    text = command[command.index("--labels") + 1]
    return dict(item.split("=", 1) for item in text.split(","))


def test_a_gpu_worker_joins_with_its_group_price_ownership_and_node(
    worker_commands: dict[str, list[str]],
) -> None:
    command = worker_commands["l4"]
    assert command[1:3] == ["start", "--disable-usage-stats"]
    assert command[command.index("--address") + 1].endswith(":6379")
    assert command[-2:] == ["--metrics-export-port=8080", "--block"]
    labels = _labels(command)
    assert labels["gearshift.io/node-group"] == "l4"
    assert labels["gearshift.io/ownership"] == "spot"
    assert labels["gearshift.io/role"] == "worker"
    assert labels["gearshift.io/kubernetes-node"] == "gpu-node-7"
    assert labels["gearshift.io/node-id"] == "rel-gearshift-l4-worker-abcde"


def test_workers_join_with_their_price_and_extra_labels(
    worker_commands: dict[str, list[str]],
) -> None:
    labels = _labels(worker_commands["a100"])
    assert labels["gearshift.io/price-per-hour"] == "4"
    assert labels["gearshift.io/ownership"] == "owned"
    labels = _labels(worker_commands["cpu"])
    assert labels["pool"] == "cpu"
    assert labels["gearshift.io/accelerator"] == "CPU"


def test_ray_node_needs_the_head_address() -> None:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    result = subprocess.run(
        [sys.executable, str(SCRIPTS / "ray-node.py"), "--print-only", "--group", "cpu"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode != 0
    assert "RAY_ADDRESS is not set" in result.stderr


def test_render_config_refuses_a_short_token(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("gateway: {port: 8000}\n")
    (tmp_path / "token").write_text("short\n")
    result = subprocess.run(
        [
            sys.executable,
            str(SCRIPTS / "render-config.py"),
            str(tmp_path / "config.yaml"),
            str(tmp_path / "token"),
            str(tmp_path / "out.yaml"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "at least 16" in result.stderr
    assert not (tmp_path / "out.yaml").exists()


class _Gateway(BaseHTTPRequestHandler):
    answers: dict[str, tuple[int, object]] = {}

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        key = self.headers.get("Authorization", "")
        status, body = self.answers.get(key, self.answers[""])
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def gateway() -> Iterator[tuple[str, type[_Gateway]]]:
    handler = type("Handler", (_Gateway,), {"answers": {}})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _helm_test(url: str, key: str = "") -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "GATEWAY_URL": url,
        "TEST_API_KEY": key,
        "TEST_DEADLINE_S": "1",
        "TEST_RETRY_S": "0.2",
    }
    return subprocess.run(
        [sys.executable, str(SCRIPTS / "helm-test.py")],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )


MODELS = (200, {"object": "list", "data": [{"id": "llama-3.1-8b", "object": "model"}]})
UNAUTHORIZED = (401, {"error": {"message": "no", "type": "x", "param": None,
                                "code": "invalid_api_key"}})  # fmt: skip


def test_helm_test_passes_on_a_model_list_with_the_test_key(
    gateway: tuple[str, type[_Gateway]],
) -> None:
    url, handler = gateway
    handler.answers.update({"": UNAUTHORIZED, "Bearer gs-test": MODELS})
    result = _helm_test(url, "gs-test")
    assert result.returncode == 0, result.stderr
    assert "llama-3.1-8b" in result.stdout


def test_helm_test_accepts_401_only_without_a_test_key(
    gateway: tuple[str, type[_Gateway]],
) -> None:
    url, handler = gateway
    handler.answers.update({"": UNAUTHORIZED})
    assert _helm_test(url).returncode == 0
    assert _helm_test(url, "gs-wrong").returncode == 1


def test_helm_test_fails_on_a_broken_gateway(gateway: tuple[str, type[_Gateway]]) -> None:
    url, handler = gateway
    handler.answers.update({"": (503, {"ready_replicas": 0})})
    result = _helm_test(url)
    assert result.returncode == 1
    assert "FAILED" in result.stderr
