"""The live gateway and the simulator take the same routing decision for the same snapshot.

The simulator records every routing cycle (candidates with their load, the request, the RNG
state and the turn counter). Each recorded snapshot is loaded into a real gateway app: its
endpoint table gets the same endpoints (scrapes return the recorded load, in-flight counts are
acquired as recorded), the HTTP request carries the same sizes (the prompt as token ids), and
the gateway's RNG and turn counter are set as the simulator's were. The replicas the gateway
then hands to its proxy must be the ones the simulator picked.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any

import aiohttp
import pytest
from starlette.responses import JSONResponse, Response
from starlette.testclient import TestClient

from scheduler.config import GearshiftConfig, RoutingConfig, parse_config
from scheduler.framework.routing import EndpointView, EngineLoad
from scheduler.gateway.app import GatewayDeps, create_app
from scheduler.gateway.endpoints import EndpointTable, StaticFleetState
from scheduler.gateway.metrics import GatewayMetrics
from scheduler.gateway.proxy import EngineProxy, OutcomeHook
from scheduler.placement.demand import DemandTracker
from scheduler.plugins import PluginRegistry
from scheduler.routing.profiles import build_profiles
from scheduler.simulator import simulate, synthetic_trace
from scheduler.simulator.run import RouteRecord
from scheduler.state import FleetState
from scheduler.types import TIER_FOR_CLASS, TrafficClass
from tests.unit.simulator.conftest import SMALL_FLEET, offline_plan

MODEL = "qwen2.5-0.5b"


class RecordingProxy(EngineProxy):
    """Stands in for the engines: remembers the picks the gateway would try, answers 200."""

    def __init__(self) -> None:
        self.picks: list[tuple[str, ...]] = []

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
        self.picks.append(tuple(endpoint.replica_id for endpoint in picks))
        return JSONResponse({"object": "text_completion", "choices": []})


def _gateway(config: GearshiftConfig, record: RouteRecord) -> tuple[TestClient, GatewayDeps]:
    loads = {view.replica_id: view.load for view in record.candidates}

    async def scrape(_: aiohttp.ClientSession, endpoint: EndpointView, __: float) -> EngineLoad:
        load = loads[endpoint.replica_id]
        return EngineLoad(
            load.running,
            load.waiting,
            load.kv_usage,
            fresh=load.fresh,
            interactive_until=load.interactive_until,  # the table keeps the later of its own
        )

    state = FleetState(
        version=1,
        endpoints=tuple(
            EndpointView(**{**_fields(view), "load": EngineLoad()}) for view in record.candidates
        ),
        models=(MODEL,),
    )
    table = EndpointTable(StaticFleetState(state), scrape=scrape)

    async def refresh() -> None:
        async with aiohttp.ClientSession() as session:
            await table.refresh(session, timeout_s=1.0)

    asyncio.run(refresh())
    for view in record.candidates:
        for _ in range(view.load.interactive):
            table.acquire(view.replica_id, TrafficClass.INTERACTIVE)
        for _ in range(view.load.in_flight - view.load.interactive):
            table.acquire(view.replica_id)
    rng = random.Random()
    rng.setstate(record.rng_state)
    deps = GatewayDeps(
        gateway=config.gateway,
        classes=config.traffic_classes,
        profiles=build_profiles(PluginRegistry.from_entry_points(), config.routing),
        table=table,
        proxy=RecordingProxy(),
        metrics=GatewayMetrics(),
        rng=rng,
        demand=DemandTracker(60.0),
        routed=Counter({MODEL: record.sequence}),
        clock=lambda: record.now,
    )
    assert table.candidates(MODEL) == list(record.candidates), "the same snapshot"
    return TestClient(create_app(deps)), deps


def _fields(view: EndpointView) -> dict[str, Any]:
    return {name: getattr(view, name) for name in EndpointView.__dataclass_fields__}


@pytest.mark.parametrize("picker", ["max-score-picker", "round-robin-picker"])
def test_gateway_and_simulator_pick_the_same_replicas(picker: str) -> None:
    config = parse_config(SMALL_FLEET % {"seqs": 16})
    routing = config.routing.model_dump(mode="json")
    for plugin in routing["plugins"]:
        if plugin["type"] == "max-score-picker":
            plugin.update(type=picker, params={})
    config = config.model_copy(update={"routing": RoutingConfig.model_validate(routing)})
    records: list[RouteRecord] = []
    trace = synthetic_trace(
        random.Random(4),
        model=MODEL,
        duration_s=6.0,
        rate_per_s=30.0,
        mix={cls: 1.0 for cls in TrafficClass},
        prompt=(700, 300),
        output=(60, 30),
        bursty=True,
    )
    simulate(config, offline_plan(config), trace, seed=11, on_route=records.append)
    loaded = [r for r in records if any(v.load.running or v.load.waiting for v in r.candidates)]
    assert len(loaded) >= 20, "compare decisions taken under load"
    compared = 0
    for record in loaded[:: max(1, len(loaded) // 25)]:
        client, deps = _gateway(config, record)
        request = record.request
        response = client.post(
            "/v1/completions",
            json={
                "model": MODEL,
                "prompt": [1] * request.prompt_tokens,
                "max_tokens": request.max_tokens,
                "service_tier": TIER_FOR_CLASS[request.traffic_class].value,
            },
        )
        proxy = deps.proxy
        assert isinstance(proxy, RecordingProxy)
        if record.decision.picks:
            assert response.status_code == 200, response.text
            assert proxy.picks == [record.decision.picks]
        else:
            assert response.status_code in (429, 503), response.text
            assert proxy.picks == []
        compared += 1
    assert compared >= 20
