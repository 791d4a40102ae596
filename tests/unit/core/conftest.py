"""Shared builders for the pure-core tests: endpoints, requests, cycles, plugins and demo nodes.

Builders are handed out as fixtures (``make_endpoint``, ``make_plugin``, ...) so test modules
never import this file. Everything is deterministic: the clock is a fixed number and every RNG
is seeded.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from typing import Any

import pytest

from scheduler.config import GearshiftConfig, PluginSpec, demo_config
from scheduler.framework.placement import NodeView
from scheduler.framework.routing import (
    Cycle,
    EndpointView,
    EngineLoad,
    PerfProfile,
    RouteRequest,
)
from scheduler.inventory import declare_fleet, node_view
from scheduler.placement.shapes import group_accelerator, perf_profile, performance
from scheduler.plugins import PluginRegistry
from scheduler.types import Ownership, ReplicaState, TrafficClass

FIXED_NOW = 1_700_000_000.0
"""The fake clock reading every Cycle carries."""


def build_endpoint(
    replica_id: str = "r0",
    *,
    model: str = "m",
    accelerator: str = "H100-SXM",
    node_id: str | None = None,
    state: ReplicaState = ReplicaState.READY,
    price_per_hour: float = 2.0,
    ownership: Ownership = Ownership.ON_DEMAND,
    prefill_tokens_per_s: float = 10_000.0,
    decode_step_base_s: float = 0.01,
    decode_step_per_seq_s: float = 0.0005,
    kv_capacity_tokens: int = 100_000,
    max_num_seqs: int = 8,
    max_context: int = 8192,
    running: int = 0,
    waiting: int = 0,
    kv_usage: float = 0.0,
    in_flight: int = 0,
    fresh: bool = True,
    interactive: int = 0,
    interactive_until: float | None = None,
    perf: PerfProfile | None = None,
) -> EndpointView:
    """One endpoint with explicit perf and load numbers; every argument has a plain default."""
    return EndpointView(
        replica_id=replica_id,
        model=model,
        accelerator=accelerator,
        node_id=node_id or f"node-{replica_id}",
        url=f"http://127.0.0.1:9/{replica_id}",
        state=state,
        price_per_hour=price_per_hour,
        ownership=ownership,
        perf=perf
        or PerfProfile(
            prefill_tokens_per_s=prefill_tokens_per_s,
            decode_step_base_s=decode_step_base_s,
            decode_step_per_seq_s=decode_step_per_seq_s,
            kv_capacity_tokens=kv_capacity_tokens,
            max_num_seqs=max_num_seqs,
            max_context=max_context,
        ),
        load=EngineLoad(
            running=running,
            waiting=waiting,
            kv_usage=kv_usage,
            in_flight=in_flight,
            fresh=fresh,
            interactive=interactive,
            interactive_until=interactive_until,
        ),
    )


def build_request(
    *,
    model: str = "m",
    traffic_class: TrafficClass = TrafficClass.STANDARD,
    prompt_tokens: int = 100,
    max_tokens: int = 100,
    stream: bool = False,
    ttft_target_s: float | None = None,
    yield_s: float | None = None,
) -> RouteRequest:
    return RouteRequest(
        model, traffic_class, prompt_tokens, max_tokens, stream, ttft_target_s, yield_s
    )


def build_cycle(seed: int = 0) -> Cycle:
    return Cycle(now=FIXED_NOW, rng=random.Random(seed))


def ray_resources(num_cpus: int, num_gpus: int, custom: dict[str, float]) -> dict[str, float]:
    """The ``Resources`` dict ``ray.nodes()`` reports for a node started with these arguments
    (Ray omits ``GPU`` when a node has none)."""
    resources: dict[str, float] = {"CPU": float(num_cpus), "memory": 8e9, **custom}
    if num_gpus:
        resources["GPU"] = float(num_gpus)
    return resources


def fleet_nodes(config: GearshiftConfig, dead: Iterable[str] = ()) -> list[NodeView]:
    """NodeViews as the controller reads them: declare every configured node, then read the
    declaration back through ``node_view`` (``dead`` node ids report ``alive=False``)."""
    dead = set(dead)
    views = []
    for declaration in declare_fleet(config):
        view = node_view(
            declaration.labels,
            ray_resources(declaration.num_cpus, declaration.num_gpus, declaration.resources),
            declaration.node_id not in dead,
        )
        assert view is not None, declaration
        views.append(view)
    return sorted(views, key=lambda view: view.node_id)


def demo_endpoint(
    config: GearshiftConfig,
    model_name: str,
    group_name: str,
    replica_id: str,
    **load: Any,
) -> EndpointView:
    """An endpoint whose perf profile and price come from the performance model, exactly as the
    controller builds them for a replica of ``model_name`` on one node of ``group_name``."""
    model = config.model(model_name)
    assert model is not None
    group = next(g for g in config.fleet.node_groups if g.name == group_name)
    spec = group_accelerator(group)
    perf = perf_profile(
        model, performance(model, spec, 1, config.placement.gpu_memory_utilization)
    )
    return build_endpoint(
        replica_id,
        model=model.name,
        accelerator=spec.name,
        node_id=f"{group.name}-0",
        price_per_hour=group.node_price_per_hour() / group.accelerators_per_node,
        ownership=group.ownership,
        perf=perf,
        **load,
    )


@pytest.fixture
def registry() -> PluginRegistry:
    return PluginRegistry.from_entry_points()


@pytest.fixture
def make_plugin(registry: PluginRegistry) -> Callable[..., Any]:
    """``make_plugin("kv-headroom-filter", Filter, max_kv_usage=0.5)`` → a built instance."""

    def make(type_name: str, kind: type, name: str | None = None, **params: Any) -> Any:
        spec = PluginSpec(name=name or type_name, type=type_name, params=params)
        return registry.build(spec, kind)

    return make


@pytest.fixture
def make_endpoint() -> Callable[..., EndpointView]:
    return build_endpoint


@pytest.fixture
def make_request() -> Callable[..., RouteRequest]:
    return build_request


@pytest.fixture
def make_cycle() -> Callable[[int], Cycle]:
    return build_cycle


@pytest.fixture
def cycle() -> Cycle:
    return build_cycle(0)


@pytest.fixture
def demo() -> GearshiftConfig:
    return demo_config()


@pytest.fixture
def make_fleet_nodes() -> Callable[..., list[NodeView]]:
    return fleet_nodes


@pytest.fixture
def make_demo_endpoint() -> Callable[..., EndpointView]:
    return demo_endpoint


@pytest.fixture
def make_ray_resources() -> Callable[..., dict[str, float]]:
    return ray_resources
