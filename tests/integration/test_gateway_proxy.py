"""The gateway against real sim engine processes on loopback (no Ray): routing by class,
streaming with the tier spliced in, retries before the first byte, aborts on disconnect, and
OpenAI error envelopes for bad input."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import openai
import pytest

from nodes.engines.launch import EngineSpec, engine_command
from nodes.engines.metrics import parse_engine_metrics
from scheduler.config import GearshiftConfig, ModelConfig, NodeGroup, parse_config
from scheduler.framework.routing import EndpointView
from scheduler.gateway.endpoints import StaticFleetState
from scheduler.gateway.server import bind, run_gateway
from scheduler.placement.shapes import group_accelerator, perf_profile, performance
from scheduler.plugins import PluginRegistry
from scheduler.state import FleetState
from scheduler.types import EngineKind, ReplicaState
from tests.integration.serve_process import free_port, wait_for

pytestmark = pytest.mark.timeout(180)

MODEL = "qwen2.5-0.5b"
CONFIG = """
fleet:
  node_groups:
    - {name: h100, accelerator: H100-SXM}
    - {name: l4, accelerator: L4, price_per_node_hour: 0.29, ownership: spot}
models:
  - {name: qwen2.5-0.5b, max_context: 4096}
gateway: {max_body_bytes: 4096, load_refresh_s: 0.2}
placement: {interval_s: 0.2}
"""


@dataclass
class Engine:
    process: subprocess.Popen[bytes]
    endpoint: EndpointView

    def metrics(self) -> Any:
        with urllib.request.urlopen(f"{self.endpoint.url}/metrics", timeout=5) as response:
            return parse_engine_metrics(response.read().decode())


def _endpoint(config: GearshiftConfig, group: NodeGroup, url: str) -> EndpointView:
    model = config.models[0]
    perf = performance(model, group_accelerator(group), 1, 0.9)
    return EndpointView(
        replica_id=f"{MODEL}.{group.name}-0.0",
        model=MODEL,
        accelerator=group.accelerator,
        node_id=f"{group.name}-0",
        url=url,
        state=ReplicaState.READY,
        price_per_hour=group.node_price_per_hour(),
        ownership=group.ownership,
        perf=perf_profile(model, perf),
    )


def _start_engine(model: ModelConfig, accelerator: str, time_scale: float) -> tuple[Any, str]:
    port = free_port()
    spec = EngineSpec(
        kind=EngineKind.SIM,
        served_model_name=model.name,
        architecture=model.resolved_architecture,
        dtype=model.dtype,
        accelerator=accelerator,
        tensor_parallel=1,
        gpu_memory_utilization=0.9,
        max_num_seqs=model.max_num_seqs,
        max_model_len=model.max_context,
        time_scale=time_scale,
    )
    argv = engine_command(spec, "127.0.0.1", port, os.getpid()).argv
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), (
        f"http://127.0.0.1:{port}"
    )


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


class GatewayThread:
    """``run_gateway`` in a thread with its own event loop, stopped by setting its event."""

    def __init__(self, config: GearshiftConfig, state: FleetState) -> None:
        self.source = StaticFleetState(state)
        self.public = bind("127.0.0.1", 0)
        self.admin = bind("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.public.getsockname()[1]}"
        self._config = config
        self._started = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()

        async def started(_: object) -> None:
            self._started.set()

        await run_gateway(
            self._config,
            PluginRegistry.from_entry_points(),
            self.source,
            public=self.public,
            admin=self.admin,
            admin_token="t" * 20,
            stop=self._stop,
            on_started=started,
        )

    def __enter__(self) -> GatewayThread:
        self._thread.start()
        assert self._started.wait(30), "gateway did not start"
        return self

    def request_stop(self) -> None:
        """What SIGTERM does in ``serve`` and ``gateway``: drain, then stop."""
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)

    def wait_stopped(self, timeout_s: float) -> None:
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), "the gateway did not stop"

    def __exit__(self, *exc: object) -> None:
        if self._thread.is_alive():
            self.request_stop()
        self._thread.join(30)
        self.public.close()
        self.admin.close()


@pytest.fixture(scope="module")
def config() -> GearshiftConfig:
    return parse_config(CONFIG)


@pytest.fixture(scope="module")
def engines(config: GearshiftConfig) -> Iterator[dict[str, Engine]]:
    started: dict[str, Engine] = {}
    try:
        for group in config.fleet.node_groups:
            # The L4 engine runs in real time so a long stream stays open; the H100 one fast.
            process, url = _start_engine(
                config.models[0],
                group.accelerator,
                time_scale=20.0 if group.name == "h100" else 1.0,
            )
            started[group.name] = Engine(process, _endpoint(config, group, url))
        for engine in started.values():
            wait_for(lambda e=engine: _healthy(e.endpoint.url), 30, "a sim engine to serve")
        yield started
    finally:
        for engine in started.values():
            engine.process.terminate()
            engine.process.wait(10)


def _state(*endpoints: EndpointView) -> FleetState:
    return FleetState(version=1, endpoints=endpoints, models=(MODEL,))


@pytest.fixture
def gateway(config: GearshiftConfig, engines: dict[str, Engine]) -> Iterator[GatewayThread]:
    with GatewayThread(config, _state(*(e.endpoint for e in engines.values()))) as running:
        yield running


def _client(gateway: GatewayThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)


def _post(
    url: str, body: bytes, content_type: str = "application/json"
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_classes_route_to_fast_and_cheap_engines(gateway: GatewayThread) -> None:
    client = _client(gateway)
    seen = {}
    for tier in ("priority", "flex"):
        raw = client.completions.with_raw_response.create(
            model=MODEL,
            prompt="hello",
            max_tokens=3,
            extra_body={"service_tier": tier},
        )
        seen[tier] = raw.headers["x-gearshift-accelerator"]
        assert json.loads(raw.text)["service_tier"] == tier
    assert seen == {"priority": "H100-SXM", "flex": "L4"}


def test_the_gateway_reports_the_demand_it_sees(gateway: GatewayThread) -> None:
    client = _client(gateway)
    for tier in ("priority", "priority", "flex"):
        client.completions.create(
            model=MODEL, prompt="hello", max_tokens=5, extra_body={"service_tier": tier}
        )
    demand = wait_for(
        lambda: (
            {d.traffic_class.value: d for d in gateway.source.demand.get(MODEL, ())}
            if len(gateway.source.demand.get(MODEL, ())) == 2
            else None
        ),
        10,
        "the gateway to report its demand",
    )
    assert set(demand) == {"interactive", "batch"}
    rates = demand["interactive"].rate_per_s, demand["batch"].rate_per_s
    assert rates[0] == pytest.approx(2 * rates[1], rel=1e-3)  # decayed over milliseconds
    assert demand["batch"].output_tokens == 5


def test_stream_chunks_carry_the_tier_and_end_with_done(gateway: GatewayThread) -> None:
    status, headers, body = _post(
        f"{gateway.url}/v1/chat/completions",
        json.dumps(
            {
                "model": MODEL,
                "stream": True,
                "max_tokens": 5,
                "service_tier": "priority",
                "messages": [{"role": "user", "content": "hi"}],
            }
        ).encode(),
    )
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    events = [line[6:] for line in body.decode().splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert chunks and all(chunk["service_tier"] == "priority" for chunk in chunks)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])


def test_unreachable_first_pick_is_retried_on_the_next(
    config: GearshiftConfig, engines: dict[str, Engine]
) -> None:
    h100 = engines["h100"].endpoint
    dead_port = free_port()
    dead = replace(
        h100, replica_id=f"{MODEL}.h100-9.0", url=f"http://127.0.0.1:{dead_port}", node_id="h100-9"
    )
    with GatewayThread(config, _state(dead, engines["l4"].endpoint)) as running:
        raw = _client(running).completions.with_raw_response.create(
            model=MODEL, prompt="anyone?", max_tokens=2, extra_body={"service_tier": "priority"}
        )
    assert raw.headers["x-gearshift-replica"] == engines["l4"].endpoint.replica_id


def test_client_disconnect_aborts_the_engine_request(
    gateway: GatewayThread, engines: dict[str, Engine]
) -> None:
    l4 = engines["l4"]
    body = json.dumps(
        {
            "model": MODEL,
            "stream": True,
            "max_tokens": 3000,
            "ignore_eos": True,
            "service_tier": "flex",
            "messages": [{"role": "user", "content": "long"}],
        }
    )
    host, port = gateway.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n{body}".encode()
        )
        assert b"200 OK" in sock.recv(4096)
        wait_for(lambda: l4.metrics().running == 1, 10, "the stream to run on the L4 engine")
    wait_for(lambda: l4.metrics().running == 0, 10, "the engine to abort the abandoned stream")


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        (b"{not json", 400, None),
        (json.dumps({"model": MODEL, "stream": True, "messages": "hi"}).encode(), 400, "messages"),
        (
            json.dumps({"model": MODEL, "prompt": "x", "guided_grammar": "a"}).encode(),
            400,
            "guided_grammar",
        ),
        (json.dumps({"model": "nope", "prompt": "x"}).encode(), 404, "model"),
        (json.dumps({"model": MODEL, "prompt": "x" * 5000}).encode(), 413, None),
        (json.dumps({"model": MODEL, "prompt": "x", "max_tokens": 4097}).encode(), 400, "prompt"),
    ],
)
def test_bad_input_gets_an_envelope_and_never_a_5xx(
    gateway: GatewayThread, body: bytes, status: int, param: str | None
) -> None:
    path = "/v1/chat/completions" if b"messages" in body else "/v1/completions"
    got, headers, raw = _post(f"{gateway.url}{path}", body)
    assert got == status, raw
    assert headers["content-type"].startswith("application/json")
    error = json.loads(raw)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param


def test_no_ready_replica_is_a_503_with_retry_after(
    config: GearshiftConfig, engines: dict[str, Engine]
) -> None:
    starting = replace(engines["l4"].endpoint, state=ReplicaState.STARTING)
    with GatewayThread(config, _state(starting)) as running:
        status, headers, raw = _post(
            f"{running.url}/v1/completions", json.dumps({"model": MODEL, "prompt": "x"}).encode()
        )
    assert status == 503
    assert int(headers["retry-after"]) >= 1
    assert json.loads(raw)["error"]["type"] == "server_error"


def test_metrics_count_requests_by_class_and_accelerator(gateway: GatewayThread) -> None:
    _client(gateway).completions.create(
        model=MODEL, prompt="count me", max_tokens=1, extra_body={"service_tier": "flex"}
    )
    with urllib.request.urlopen(f"{gateway.url}/metrics", timeout=5) as response:
        text = response.read().decode()
    assert (
        f'gearshift_requests_total{{accelerator="L4",code="200",model="{MODEL}",'
        f'traffic_class="batch"}}'
    ) in text
    assert "gearshift_fleet_cost_dollars_per_hour" in text


def test_unknown_path_and_method_are_envelopes(gateway: GatewayThread) -> None:
    status, _, raw = _post(f"{gateway.url}/v1/embeddings", b"{}")
    assert status == 404 and "error" in json.loads(raw)
    request = urllib.request.Request(f"{gateway.url}/v1/models", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(request, timeout=5)
    assert error.value.code == 405
    assert "error" in json.loads(error.value.read())
