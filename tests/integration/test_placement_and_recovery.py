"""On a real multi-node Ray cluster on loopback: placement respects labels and memory, and a
killed replica actor is replaced while traffic keeps flowing."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from nodes.accelerators import accelerator
from nodes.models import Dtype, catalog_model
from nodes.performance import replica_performance
from tests.integration.serve_process import ServeProcess, pid_alive, start_serve, wait_for

pytestmark = [pytest.mark.ray, pytest.mark.e2e, pytest.mark.timeout(600)]

LONG_CONTEXT = 32768

CONFIG = f"""
fleet:
  node_groups:
    - {{name: h100, accelerator: H100-SXM, nodes: 1, ownership: on-demand}}
    - {{name: l4, accelerator: L4, nodes: 1, price_per_node_hour: 0.29, ownership: spot}}
    - {{name: a100x2, accelerator: A100-80GB, accelerators_per_node: 2, nodes: 1}}
    - {{name: cpu, accelerator: CPU, nodes: 1, price_per_node_hour: 0.06, ownership: owned,
        cpu: {{cores: 16, memory_gib: 64}}}}
models:
  - name: llama-3.1-8b
    max_context: {LONG_CONTEXT}
    replicas: 1
    accelerators: [H100-SXM, L4]
  - name: qwen2.5-7b
    max_context: 4096
    replicas: 1
    tensor_parallel: 2
    accelerators: [A100-80GB]
  - name: qwen2.5-0.5b
    max_context: 4096
    replicas: 2
    accelerators: [L4, CPU]
placement:
  interval_s: 1.0
  restart_backoff_s: 0.5
"""


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    tmp = tmp_path_factory.mktemp("recovery")
    config = tmp / "fleet.yaml"
    config.write_text(CONFIG)
    process = start_serve(tmp, config)
    try:
        yield process
    finally:
        assert process.stop() == 0, process.output()


def test_placement_respects_memory_and_labels(serve: ServeProcess) -> None:
    # The premise: an 8B model's KV cache for 32k tokens fits an H100 but not a 24 GB L4.
    llama = catalog_model("llama-3.1-8b").architecture
    assert replica_performance(llama, Dtype.BF16, accelerator("L4")).kv_capacity_tokens < (
        LONG_CONTEXT
    )
    replicas = {r["replica_id"]: r for r in serve.status()["replicas"]}
    by_model: dict[str, set[str]] = {}
    for replica in replicas.values():
        assert replica["placed_on"] == replica["node_id"]
        by_model.setdefault(replica["model"], set()).add(replica["accelerator"])
    assert by_model == {
        "llama-3.1-8b": {"H100-SXM"},
        "qwen2.5-0.5b": {"L4", "CPU"},
        "qwen2.5-7b": {"A100-80GB"},
    }


def test_tensor_parallel_replica_gets_its_gpus_together(serve: ServeProcess) -> None:
    (replica,) = [r for r in serve.status()["replicas"] if r["model"] == "qwen2.5-7b"]
    assert replica["tensor_parallel"] == 2
    assert replica["state"] == "ready"
    assert replica["placed_on"] == replica["node_id"] == "a100x2-0"
    (node,) = [n for n in serve.status()["nodes"] if n["node_id"] == "a100x2-0"]
    assert node["accelerators_used"] == node["accelerator_count"] == 2


def test_killed_replica_is_replaced_and_traffic_continues(
    serve: ServeProcess, tmp_path: Path
) -> None:
    client = openai.OpenAI(base_url=f"{serve.base_url}/v1", api_key="unused", max_retries=0)
    victim = next(r for r in serve.status()["replicas"] if r["accelerator"] == "L4")
    os.kill(victim["pid"], signal.SIGKILL)  # the replica actor's process: the actor dies

    failures, served = [], []
    deadline = time.monotonic() + 60
    replaced = None
    while time.monotonic() < deadline:
        for tier in ("priority", "flex"):
            try:
                raw = client.chat.completions.with_raw_response.create(
                    model="qwen2.5-0.5b",
                    messages=[{"role": "user", "content": "still there?"}],
                    max_tokens=2,
                    service_tier=tier,  # type: ignore[arg-type]
                )
                served.append(raw.headers["x-gearshift-accelerator"])
            except openai.APIError as exc:
                failures.append(repr(exc))
        current = {r["replica_id"]: r for r in serve.status()["replicas"]}
        new = current.get(victim["replica_id"])
        if new and new["state"] == "ready" and new["pid"] != victim["pid"]:
            replaced = new
            break
    assert replaced is not None, "the killed replica was not replaced within 60 s"
    assert replaced["restarts"] >= 1
    assert replaced["placed_on"] == "l4-0"
    assert not failures, failures
    assert served, "no request was served while the replica was replaced"
    wait_for(lambda: not pid_alive(victim["engine_pid"]), 15, "the dead replica's engine to exit")

    raw = client.chat.completions.with_raw_response.create(
        model="qwen2.5-0.5b",
        messages=[{"role": "user", "content": "back on the L4?"}],
        max_tokens=2,
        service_tier="priority",
    )
    assert raw.headers["x-gearshift-accelerator"] == "L4"
