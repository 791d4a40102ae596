"""Admission through the real gateway app (Starlette TestClient, a stand-in proxy): queue
timeouts and full queues end in 503 envelopes with Retry-After, and under total overload batch
is shed while no interactive request is refused."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from starlette.responses import JSONResponse, Response
from starlette.testclient import TestClient

from scheduler.config import ClassAdmission, GearshiftConfig, demo_config
from scheduler.framework.routing import EndpointView, EngineLoad
from scheduler.gateway.admission import AdmissionGate
from scheduler.gateway.app import GatewayDeps, create_app
from scheduler.gateway.endpoints import EndpointTable, StaticFleetState
from scheduler.gateway.metrics import GatewayMetrics
from scheduler.gateway.proxy import EngineProxy, OutcomeHook
from scheduler.placement.demand import DemandTracker
from scheduler.plugins import PluginRegistry
from scheduler.routing.profiles import build_profiles
from scheduler.state import FleetState
from scheduler.types import TrafficClass

pytestmark = pytest.mark.timeout(60)

MODEL = "m"


class OkProxy(EngineProxy):
    """Answers 200 for whatever routing picked, after ``delay_s``."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s

    async def forward(
        self,
        picks: Any,
        path: str,
        body: dict[str, Any],
        *,
        stream: bool,
        tier: str,
        request_id: str,
        on_outcome: OutcomeHook,
        traffic_class: object = None,
    ) -> Response:
        await asyncio.sleep(self.delay_s)
        return JSONResponse({"replica": picks[0].replica_id})


class Fleet:
    """A gateway app over two replicas whose scraped load the test sets."""

    def __init__(self, make_endpoint: Any, admission: dict[str, Any]) -> None:
        base = demo_config()
        gateway = base.gateway.model_copy(
            update={
                "admission": base.gateway.admission.model_copy(update=admission),
                "retry_after_s": 2.0,
            }
        )
        config: GearshiftConfig = base.model_copy(update={"gateway": gateway})
        endpoints = (
            make_endpoint("fast", model=MODEL, max_num_seqs=8),
            make_endpoint("cheap", model=MODEL, max_num_seqs=8, price_per_hour=0.3),
        )
        self.kv_usage = 0.0

        async def scrape(_: object, endpoint: EndpointView, __: float) -> EngineLoad:
            return EngineLoad(kv_usage=self.kv_usage, fresh=True)

        state = FleetState(version=1, endpoints=endpoints, models=(MODEL,))
        self.table = EndpointTable(StaticFleetState(state), scrape=scrape)
        self.set_saturation(0.0)
        self.deps = GatewayDeps(
            gateway=config.gateway,
            classes=config.traffic_classes,
            profiles=build_profiles(PluginRegistry.from_entry_points(), config.routing),
            table=self.table,
            proxy=OkProxy(),
            metrics=GatewayMetrics(),
            rng=random.Random(0),
            demand=DemandTracker(60.0),
        )
        self.app = create_app(self.deps)
        self.client = TestClient(self.app)

    def set_saturation(self, kv_usage: float) -> None:
        self.kv_usage = kv_usage

        async def refresh() -> None:
            async with aiohttp.ClientSession() as session:
                await self.table.refresh(session, timeout_s=1.0)

        asyncio.run(refresh())

    def post(self, tier: str) -> tuple[int, dict[str, str], dict[str, Any]]:
        response = self.client.post(
            "/v1/completions",
            json={"model": MODEL, "prompt": "hi", "max_tokens": 4, "service_tier": tier},
        )
        return response.status_code, dict(response.headers), response.json()


def _class(max_queued: int, ttl: float, threshold: float | None) -> ClassAdmission:
    return ClassAdmission(
        max_queued=max_queued,
        max_queued_bytes=1_000_000,
        queue_ttl_s=ttl,
        saturation_threshold=threshold,
    )


@pytest.fixture
def fleet(make_endpoint: Any, request: pytest.FixtureRequest) -> Iterator[Fleet]:
    running = Fleet(make_endpoint, getattr(request, "param", {}))
    with running.client:
        yield running


def _is_503_envelope(status: int, headers: dict[str, str], body: dict[str, Any], code: str) -> bool:
    error = body.get("error", {})
    return (
        status == 503
        and int(headers["retry-after"]) == 2
        and set(error) == {"message", "type", "param", "code"}
        and error["code"] == code
    )


@pytest.mark.parametrize("fleet", [{"batch": _class(8, 0.3, 0.5)}], indirect=True)
def test_a_request_older_than_its_ttl_ends_with_a_503_envelope(fleet: Fleet) -> None:
    fleet.set_saturation(0.9)
    started = time.monotonic()
    status, headers, body = fleet.post("flex")
    waited = time.monotonic() - started
    assert _is_503_envelope(status, headers, body, "queue_timeout"), body
    assert 0.3 <= waited < 1.5
    assert fleet.deps.metrics.rejections.labels("batch", "queue_timeout")._value.get() == 1


@pytest.mark.parametrize("fleet", [{"batch": _class(1, 5.0, 0.5)}], indirect=True)
def test_a_full_queue_answers_503_with_retry_after_at_once(fleet: Fleet) -> None:
    fleet.set_saturation(0.9)
    results: list[int] = []
    waiter = threading.Thread(target=lambda: results.append(fleet.post("flex")[0]))
    waiter.start()
    deadline = time.monotonic() + 5
    while _waiting(fleet) == 0:
        assert time.monotonic() < deadline, "the first batch request never queued"
        time.sleep(0.01)
    started = time.monotonic()
    status, headers, body = fleet.post("flex")
    assert time.monotonic() - started < 0.5
    assert _is_503_envelope(status, headers, body, "queue_full"), body
    fleet.set_saturation(0.0)  # the waiting one is granted and answered
    waiter.join(5)
    assert results == [200]


def _waiting(fleet: Fleet) -> int:
    gate: AdmissionGate = fleet.app.state.admission
    return gate.policy.queued()


@pytest.mark.parametrize(
    "fleet",
    [
        {
            "batch": _class(4, 10.0, 0.5),
            "standard": _class(4, 10.0, 0.9),
            "max_queued_total": 6,
        }
    ],
    indirect=True,
)
def test_total_overload_sheds_batch_and_refuses_no_interactive_request(fleet: Fleet) -> None:
    fleet.set_saturation(1.0)
    outcomes: Counter[tuple[str, int, str | None]] = Counter()
    lock = threading.Lock()

    def send(tier: str) -> None:
        status, _, body = fleet.post(tier)
        with lock:
            outcomes[tier, status, (body.get("error") or {}).get("code")] += 1

    threads = [
        threading.Thread(target=send, args=(tier,))
        for _ in range(10)
        for tier in ("flex", "default", "priority")
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10
    while sum(n for (t, _, _), n in outcomes.items() if t == "priority") < 10:
        assert time.monotonic() < deadline, outcomes
        time.sleep(0.01)
    time.sleep(0.3)  # let the flood settle into the queues before capacity returns
    fleet.set_saturation(0.0)
    for thread in threads:
        thread.join(10)
    assert outcomes["priority", 200, None] == 10  # interactive: never queued, never refused
    shed = sum(n for (t, s, _), n in outcomes.items() if t == "flex" and s == 503)
    assert shed > 0 and outcomes["flex", 200, None] > 0  # batch shed, yet not starved
    assert sum(outcomes.values()) == 30


def test_the_table_counts_interactive_requests_in_flight_for_batch_to_yield_to(
    make_endpoint: Any,
) -> None:
    endpoint = make_endpoint("fast")
    table = EndpointTable(StaticFleetState(FleetState(version=1, endpoints=(endpoint,))))
    table.state = FleetState(version=1, endpoints=(endpoint,))
    table.acquire("fast", TrafficClass.INTERACTIVE)
    table.acquire("fast", TrafficClass.INTERACTIVE)
    table.acquire("fast", TrafficClass.BATCH)
    assert (table.load("fast").in_flight, table.load("fast").interactive) == (3, 2)
    table.release("fast", TrafficClass.INTERACTIVE)
    table.release("fast", TrafficClass.BATCH, reached_engine=False)
    assert (table.load("fast").in_flight, table.load("fast").interactive) == (1, 1)
    table.release("fast", TrafficClass.INTERACTIVE)
    assert (table.load("fast").in_flight, table.load("fast").interactive) == (0, 0)
    assert table.candidates("m")[0].load.interactive == 0
