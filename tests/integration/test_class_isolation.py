"""Traffic classes under load, against real sim engine processes behind a real gateway on
loopback (no Ray): a fast replica (H100) and a cheap one (L4) serve the same model.

- Class isolation (reliability matrix C1): one Poisson schedule of interactive chat (1,000
  requests over 50 s), replayed twice: alone (its unloaded TTFT), then while batch work arrives
  at twice what the cheap replica sustains (its capacity-table rate). Batch yields the H100
  while interactive traffic uses it (it backfills it once that traffic stops), waits in the
  gateway's batch queue while the L4 is saturated, and runs behind interactive work in the
  engine's priority order. Asserted: at least 99.9 % of the interactive requests succeed,
  batch completes work, and interactive TTFT p99 stays within 1.25x its unloaded value.
  Both phases replay the same arrival times because the tail of TTFT is set by the bursts of
  the schedule: an earlier version of this test took its baseline from another schedule (another
  seed, half as long), whose p99 is 63-66 ms where the loaded phase's own schedule has 77-86 ms
  with no batch at all, and reported that 1.3x as growth.
- The control for the above: batch routed like interactive traffic, without yielding, lands on
  the H100 beside the interactive requests, and the same measurement sees interactive TTFT grow
  past the bound (p50 and p95 1.6-1.9x, p99 1.3-2.0x). So the bound holds because of the
  scheduler, not because the measurement cannot see interference.
- Total overload (C2): both classes far beyond the fleet: 0 interactive rejections while batch
  is shed.
- A per-key rate limit answers 429 with ``Retry-After`` and the ``x-ratelimit-*`` headers (B5).
- A request that waits past its class's queue TTL ends with a 503 envelope (C4).

The gateway runs in its own process and the batch clients in another, at a lower CPU priority,
as clients on other machines would: on 2 cores, client threads inside the gateway's interpreter
(its GIL) turn client work into gateway latency. ``benchmarks/class_isolation.py`` runs the
same measurement for minutes per phase. Figures are printed for the closing note (run with
``-s``).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from scheduler.cli import app
from scheduler.config import GearshiftConfig, parse_config
from scheduler.framework.routing import EndpointView
from scheduler.placement.capacity import demand_capacity
from scheduler.placement.shapes import group_accelerator, performance
from scheduler.state import FleetState
from scheduler.types import TrafficClass
from tests.integration.gateway_process import Answer, GatewayProcess, LoadProcess, poisson_times
from tests.integration.serve_process import wait_for
from tests.integration.test_gateway_proxy import (
    GatewayThread,
    _endpoint,
    _healthy,
    _start_engine,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

MODEL = "qwen2.5-0.5b"
TIME_SCALE = 0.25
"""Engines run 4× slower than modelled, so the cheap tier saturates at a request rate the test
client and the gateway sustain on 2 cores."""
BATCH_PROMPT, BATCH_OUTPUT = 1500, 200
CHAT_PROMPT, CHAT_OUTPUT = 200, 16
CHAT_RATE = 20.0
OVERLOAD_S = 10.0
CHAT_S = 50.0
"""1,000 interactive requests per phase: enough to tell 99.9 % from 99 %."""
CHAT_SEED = 3
"""Both phases replay one arrival schedule, so the ratio compares like with like."""

CONFIG = """
fleet:
  node_groups:
    - {name: h100, accelerator: H100-SXM}
    - {name: l4, accelerator: L4, price_per_node_hour: 0.29, ownership: spot}
models:
  - {name: qwen2.5-0.5b, max_context: 4096, max_num_seqs: 16}
gateway: {load_refresh_s: 0.2}
"""


@dataclass
class Outcome:
    status: int
    ttft_s: float | None
    accelerator: str = ""


@pytest.fixture(scope="module")
def config() -> GearshiftConfig:
    return parse_config(CONFIG)


@contextmanager
def sim_engines(config: GearshiftConfig) -> Iterator[tuple[EndpointView, ...]]:
    """A sim engine process per node group of ``config``, serving its first model."""
    processes = []
    endpoints = []
    try:
        for group in config.fleet.node_groups:
            process, url = _start_engine(config.models[0], group.accelerator, TIME_SCALE)
            processes.append(process)
            endpoints.append(_endpoint(config, group, url))
        for endpoint in endpoints:
            wait_for(lambda e=endpoint: _healthy(e.url), 30, "a sim engine to serve")
        yield tuple(endpoints)
    finally:
        for process in processes:
            process.terminate()
            process.wait(10)


@pytest.fixture(scope="module")
def engines(config: GearshiftConfig) -> Iterator[tuple[EndpointView, ...]]:
    with sim_engines(config) as endpoints:
        yield endpoints


def _serve(config: GearshiftConfig, engines: tuple[EndpointView, ...]) -> GatewayThread:
    return GatewayThread(config, FleetState(version=1, endpoints=engines, models=(MODEL,)))


@pytest.fixture
def gateway(
    config: GearshiftConfig, engines: tuple[EndpointView, ...]
) -> Iterator[GatewayThread]:
    with _serve(config, engines) as running:
        yield running


def _cheap_batch_rate(config: GearshiftConfig) -> float:
    """Requests per second of the batch shape the L4 replica sustains, in real time."""
    model = config.models[0]
    group = next(g for g in config.fleet.node_groups if g.name == "l4")
    perf = performance(model, group_accelerator(group), 1, config.placement.gpu_memory_utilization)
    point = demand_capacity(
        perf,
        config.traffic_classes.targets(TrafficClass.BATCH),
        BATCH_PROMPT,
        BATCH_OUTPUT,
        model.max_num_seqs,
    )
    return point.rate_per_s * TIME_SCALE


def _chat(client: httpx.Client) -> Outcome:
    started = time.perf_counter()
    body = {
        "model": MODEL,
        "prompt": [7] * CHAT_PROMPT,
        "max_tokens": CHAT_OUTPUT,
        "stream": True,
        "service_tier": "priority",
    }
    with client.stream("POST", "/v1/completions", json=body) as response:
        if response.status_code != 200:
            response.read()
            return Outcome(response.status_code, None)
        ttft = None
        for line in response.iter_lines():
            if ttft is None and line.startswith("data: {"):
                ttft = time.perf_counter() - started
        return Outcome(200, ttft, response.headers.get("x-gearshift-accelerator", ""))


def _batch(client: httpx.Client) -> int:
    body = {
        "model": MODEL,
        "prompt": [9] * BATCH_PROMPT,
        "max_tokens": BATCH_OUTPUT,
        "ignore_eos": True,
        "service_tier": "flex",
    }
    return client.post("/v1/completions", json=body).status_code


def _run_chat(url: str, seed: int, duration_s: float) -> list[Outcome]:
    schedule = poisson_times(CHAT_RATE, duration_s, seed)
    outcomes: list[Outcome] = []
    lock = threading.Lock()
    start = time.perf_counter()

    # One pooled client: a client per request spends the CPU the gateway measures with.
    limits = httpx.Limits(max_connections=16, max_keepalive_connections=16)
    with httpx.Client(base_url=url, timeout=120, limits=limits) as client:

        def one(at: float) -> None:
            time.sleep(max(0.0, at - (time.perf_counter() - start)))
            outcome = _chat(client)
            with lock:
                outcomes.append(outcome)

        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(one, schedule))
    return outcomes


def _served_by(accelerators: Iterable[str]) -> str:
    counts = Counter(accelerators)
    return ", ".join(f"{name} {counts[name]}" for name in sorted(counts))


def _growth(unloaded: list[Outcome], loaded: list[Outcome], q: float) -> str:
    before, after = quantile(unloaded, q), quantile(loaded, q)
    return f"p{round(q * 100)} {before * 1000:.1f} -> {after * 1000:.1f} ms ({after / before:.2f}x)"


def quantile(outcomes: list[Outcome], q: float) -> float:
    ttfts = sorted(o.ttft_s for o in outcomes if o.ttft_s is not None)
    return ttfts[min(len(ttfts) - 1, round(q * (len(ttfts) - 1)))]


@dataclass
class LoadedRun:
    interactive: list[Outcome]
    batch: list[Answer]
    rate_per_s: float
    interactive_from: float
    interactive_to: float

    def batch_done(self) -> list[str]:
        return [a.accelerator for a in self.batch if a.status == 200]

    def batch_beside(self) -> list[str]:
        """Accelerators of the batch requests answered while interactive traffic ran."""
        return [
            a.accelerator
            for a in self.batch
            if a.status == 200 and self.interactive_from < a.answered_at < self.interactive_to
        ]


def measure_unloaded(
    config: GearshiftConfig, engines: tuple[EndpointView, ...], duration_s: float = CHAT_S
) -> list[Outcome]:
    """The interactive schedule alone: its unloaded TTFT."""
    state = FleetState(version=1, endpoints=engines, models=(MODEL,))
    with GatewayProcess(config, state) as gateway:
        return _run_chat(gateway.url, seed=CHAT_SEED, duration_s=duration_s)


def measure_under_batch_load(
    config: GearshiftConfig, engines: tuple[EndpointView, ...], duration_s: float = CHAT_S
) -> LoadedRun:
    """The same interactive schedule while batch arrives at twice the L4's capacity."""
    state = FleetState(version=1, endpoints=engines, models=(MODEL,))
    rate = 2 * _cheap_batch_rate(config)
    body = {
        "model": MODEL,
        "prompt": [9] * BATCH_PROMPT,
        "max_tokens": BATCH_OUTPUT,
        "ignore_eos": True,
        "service_tier": "flex",
    }
    with GatewayProcess(config, state) as gateway:
        flood = LoadProcess(gateway.url, body, poisson_times(rate, duration_s + 5, seed=2))
        flood.start()
        try:
            time.sleep(3.0)  # let the batch load build up
            started = time.time()
            interactive = _run_chat(gateway.url, seed=CHAT_SEED, duration_s=duration_s)
            ended = time.time()
            batch = flood.answers(timeout_s=300 + duration_s)
        finally:
            flood.stop()
    return LoadedRun(interactive, batch, rate, started, ended)


def class_agnostic(config: GearshiftConfig) -> GearshiftConfig:
    """``config`` with batch routed like interactive traffic (to the fastest predicted first
    token) and never yielding: what Gearshift's batch class is measured against."""
    data = config.model_dump(mode="json", by_alias=True)
    data["gateway"]["admission"]["batch"]["yield_to_interactive_s"] = None
    profiles = data["routing"]["profiles"]
    profiles["batch"] = profiles["interactive"]  # its slo-ttft-filter passes all: no batch target
    return GearshiftConfig.model_validate(data)


@pytest.fixture(scope="module")
def unloaded(config: GearshiftConfig, engines: tuple[EndpointView, ...]) -> list[Outcome]:
    outcomes = measure_unloaded(config, engines)
    assert all(o.status == 200 for o in outcomes)
    return outcomes


def describe(unloaded: list[Outcome], run: LoadedRun) -> str:
    ok = [o for o in run.interactive if o.status == 200]
    done = run.batch_done()
    return (
        "interactive TTFT, unloaded -> under batch load: "
        + ", ".join(_growth(unloaded, run.interactive, q) for q in (0.5, 0.9, 0.95, 0.99))
        + "; "
        f"interactive ok {len(ok)}/{len(run.interactive)} "
        f"({_served_by(o.accelerator for o in ok)}); batch offered {run.rate_per_s:.2f} req/s "
        f"(2x the L4's table rate): {len(done)} done ({_served_by(done)}; while interactive "
        f"ran: {_served_by(run.batch_beside())}), "
        f"{sum(a.status == 503 for a in run.batch)} got 503 (shed or past the queue TTL), "
        f"{len(run.batch)} answered"
    )


def test_interactive_keeps_its_latency_while_batch_floods_the_cheap_tier(
    config: GearshiftConfig, engines: tuple[EndpointView, ...], unloaded: list[Outcome]
) -> None:
    run = measure_under_batch_load(config, engines)
    print(f"\n{describe(unloaded, run)}")
    ok = [o for o in run.interactive if o.status == 200]
    assert len(ok) >= 0.999 * len(run.interactive)
    assert quantile(run.interactive, 0.99) <= 1.25 * quantile(unloaded, 0.99)
    assert run.batch_done(), "batch must still make progress"


def test_without_yielding_the_same_measurement_sees_batch_slow_interactive_down(
    config: GearshiftConfig, engines: tuple[EndpointView, ...], unloaded: list[Outcome]
) -> None:
    """The control: batch routed like interactive traffic, without yielding, lands on the H100
    beside interactive traffic, and the same measurement sees it."""
    run = measure_under_batch_load(class_agnostic(config), engines)
    print(f"\nwithout yielding: {describe(unloaded, run)}")
    assert "H100-SXM" in run.batch_beside()
    # Measured here: p50 and p95 1.6-1.9x, p99 1.3-2.0x (the engine's priority order still
    # puts interactive first inside the shared H100); p50 and p95 are the steady signal.
    for q in (0.5, 0.95):
        assert quantile(run.interactive, q) > 1.25 * quantile(unloaded, q)


def _with(config: GearshiftConfig, gateway: dict[str, Any]) -> GearshiftConfig:
    data = config.model_dump(mode="json", by_alias=True)
    data["gateway"] = {**data["gateway"], **gateway}
    return GearshiftConfig.model_validate(data)


def test_under_total_overload_batch_is_shed_and_no_interactive_request_is_rejected(
    config: GearshiftConfig, engines: tuple[EndpointView, ...]
) -> None:
    small_queues = _with(
        config,
        {"admission": {"batch": {"max_queued": 8, "queue_ttl_s": 60, "saturation_threshold": 0.8},
                       "max_queued_total": 12}},
    )  # fmt: skip
    with _serve(small_queues, engines) as gateway:
        statuses: list[int] = []

        def batch_worker(_: int) -> None:
            with httpx.Client(base_url=gateway.url, timeout=120) as client:
                statuses.append(_batch(client))

        with ThreadPoolExecutor(max_workers=40) as pool:
            flood = [pool.submit(batch_worker, i) for i in range(120)]
            time.sleep(2.0)  # the fleet and the batch queue fill up
            chat = _run_chat(gateway.url, seed=5, duration_s=OVERLOAD_S)
            for future in flood:
                future.result()
    rejected = [o for o in chat if o.status != 200]
    shed = sum(s == 503 for s in statuses)
    print(
        f"\ntotal overload: interactive {len(chat) - len(rejected)}/{len(chat)} ok; batch "
        f"{statuses.count(200)} done, {shed} shed (503) of {len(statuses)}"
    )
    assert rejected == [], "no interactive request may be rejected while batch is shed"
    assert shed > 0, "the overload must have shed batch work"


def test_a_per_key_rate_limit_answers_429_with_the_headers(
    config: GearshiftConfig, engines: tuple[EndpointView, ...], tmp_path: Path
) -> None:
    keys = tmp_path / "keys.json"
    created = CliRunner().invoke(
        app,
        ["keys", "create", "--tenant", "acme", "--rpm", "2", "--keys-file", str(keys),
         "--classes", "interactive,standard,batch"],
    )  # fmt: skip
    assert created.exit_code == 0, created.output
    key = created.stdout.strip().splitlines()[-1]
    limited = _with(config, {"auth": {"enabled": True, "keys_file": str(keys)}})
    with _serve(limited, engines) as gateway, httpx.Client(base_url=gateway.url) as client:
        body = {"model": MODEL, "prompt": "hi", "max_tokens": 2}
        assert client.post("/v1/completions", json=body).status_code == 401
        headers = {"Authorization": f"Bearer {key}"}
        answers = [client.post("/v1/completions", json=body, headers=headers) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    refused = answers[-1]
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert float(refused.headers["retry-after"]) > 0
    for answer in answers:
        for name in ("limit", "remaining", "reset"):
            assert f"x-ratelimit-{name}-requests" in answer.headers
    assert [a.headers["x-ratelimit-remaining-requests"] for a in answers] == ["1", "0", "0"]


def test_a_request_waiting_past_its_queue_ttl_ends_with_a_503_envelope(
    config: GearshiftConfig, engines: tuple[EndpointView, ...]
) -> None:
    # A batch gate that closes as soon as anything runs; an interactive stream keeps it closed.
    closed = _with(
        config, {"admission": {"batch": {"queue_ttl_s": 0.5, "saturation_threshold": 1e-6}}}
    )
    long_chat = {
        "model": MODEL, "prompt": "go on", "max_tokens": 3000, "ignore_eos": True,
        "stream": True, "service_tier": "priority",
    }  # fmt: skip
    with (
        _serve(closed, engines) as gateway,
        httpx.Client(base_url=gateway.url) as client,
        client.stream("POST", "/v1/completions", json=long_chat) as stream,
    ):
        assert stream.status_code == 200
        lines = stream.iter_lines()  # keep it referenced: a collected iterator closes the stream
        next(lines)
        time.sleep(0.6)  # the gateway's next load scrape sees it running
        started = time.perf_counter()
        answer = client.post(
            "/v1/completions",
            json={"model": MODEL, "prompt": "later", "max_tokens": 2, "service_tier": "flex"},
        )
        waited = time.perf_counter() - started
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"]["code"] == "queue_timeout"
    assert "retry-after" in answer.headers
    assert 0.5 <= waited < 5.0
