"""The reconcile loop without Ray: a fake actuator, a fixed node list and a fake clock.

Pins: every planned replica is started once; READY replicas enter the endpoint table; a
failed replica is stopped, counted, remembered and restarted only after its back-off; a
replica the plan drops is drained (out of the table first); a replica that never becomes
ready is failed at the start deadline; a replica whose node left is failed.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from nodes.engines.launch import EngineSpec
from scheduler.config import GearshiftConfig, parse_config
from scheduler.controlplane.controller import Actuator, Controller
from scheduler.controlplane.replica import ReplicaHealth
from scheduler.framework.placement import (
    ClassDemand,
    NodeView,
    PlacementSolver,
    ReplicaAssignment,
)
from scheduler.inventory import declared_node_views
from scheduler.plugins import PluginRegistry
from scheduler.types import EngineKind, ReplicaState, TrafficClass

CONFIG = """
fleet:
  node_groups:
    - {name: h100, accelerator: H100-SXM, nodes: 1}
    - {name: l4, accelerator: L4, nodes: 2, price_per_node_hour: 0.3}
models:
  - {name: qwen2.5-0.5b, max_context: 4096, replicas: 2}
placement: {restart_backoff_s: 10, start_timeout_s: 100, drain_grace_s: 0, drain_timeout_s: 5}
"""


@dataclasses.dataclass
class FakeReplica:
    assignment: ReplicaAssignment
    spec: EngineSpec
    health: ReplicaHealth | None
    calls: list[str] = dataclasses.field(default_factory=list)


class FakeActuator:
    """Holds replicas in memory; tests set each one's health."""

    def __init__(self) -> None:
        self.replicas: list[FakeReplica] = []

    def start(self, assignment: ReplicaAssignment, spec: EngineSpec, on_gpu: bool) -> Any:
        replica = FakeReplica(assignment, spec, ReplicaHealth(ReplicaState.STARTING, ""))
        self.replicas.append(replica)
        return replica

    async def probe(self, handle: Any, timeout_s: float) -> ReplicaHealth | None:
        handle.calls.append("probe")
        health: ReplicaHealth | None = handle.health
        return health

    async def drain(self, handle: Any, timeout_s: float) -> None:
        handle.calls.append("drain")

    async def stop(self, handle: Any, timeout_s: float) -> None:
        handle.calls.append("stop")

    def live(self) -> list[FakeReplica]:
        return [r for r in self.replicas if not {"stop", "drain"} & set(r.calls)]

    def set_ready(self) -> None:
        for replica in self.live():
            rid = replica.assignment.replica_id
            replica.health = ReplicaHealth(
                ReplicaState.READY,
                f"http://127.0.0.1:9/{rid}",
                placed_on=replica.assignment.node_id,
            )


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _nodes(config: GearshiftConfig) -> list[NodeView]:
    return declared_node_views(config)


def _controller(
    config: GearshiftConfig, nodes: Callable[[], list[NodeView]] | None = None
) -> tuple[Controller, FakeActuator, Clock]:
    registry = PluginRegistry.from_entry_points()
    actuator, clock = FakeActuator(), Clock()
    actuator_port: Actuator = actuator
    controller = Controller(
        config,
        registry.build(config.placement.solver, PlacementSolver),
        actuator_port,
        read_nodes=nodes or (lambda: _nodes(config)),
        clock=clock,
    )
    return controller, actuator, clock


def _run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def test_first_round_starts_every_planned_replica_once() -> None:
    controller, actuator, _ = _controller(parse_config(CONFIG))

    async def rounds() -> None:
        await controller.tick()
        await controller.tick()

    _run(rounds())
    assert len(actuator.replicas) == 2
    assert {r.spec.kind for r in actuator.replicas} == {EngineKind.SIM}
    state = controller.fleet_state()
    assert state.planned_replicas == 2 and not state.ready
    assert {r.state for r in state.replicas} == {"starting"}
    assert state.endpoints == ()  # no URL yet: nothing to route to


def test_ready_replicas_enter_the_endpoint_table() -> None:
    controller, actuator, _ = _controller(parse_config(CONFIG))

    async def rounds() -> None:
        await controller.tick()
        actuator.set_ready()
        await controller.tick()

    _run(rounds())
    state = controller.fleet_state()
    assert state.ready
    assert {e.state for e in state.endpoints} == {ReplicaState.READY}
    assert {e.url for e in state.endpoints} == {
        f"http://127.0.0.1:9/{r.assignment.replica_id}" for r in actuator.replicas
    }


def test_failed_replica_is_stopped_remembered_and_restarted_after_backoff() -> None:
    controller, actuator, clock = _controller(parse_config(CONFIG))

    async def scenario() -> None:
        await controller.tick()
        actuator.set_ready()
        await controller.tick()
        victim = actuator.replicas[0]
        victim.health = ReplicaHealth(
            ReplicaState.FAILED, "", "engine exited with -9", log_tail="Traceback ..."
        )
        await controller.tick()
        assert "stop" in victim.calls
        assert len(actuator.live()) == 1  # back-off: not restarted in the same round
        clock.now += 5
        await controller.tick()
        assert len(actuator.live()) == 1  # still inside restart_backoff_s (10 s)
        clock.now += 6
        await controller.tick()
        assert len(actuator.live()) == 2
        restarted = actuator.live()[-1]
        assert restarted.assignment.replica_id == victim.assignment.replica_id
        actuator.set_ready()
        await controller.tick()

    _run(scenario())
    (status,) = [
        r
        for r in controller.fleet_state().replicas
        if r.replica_id == actuator.replicas[0].assignment.replica_id
    ]
    assert status.restarts == 1
    assert "engine exited with -9" in status.last_failure
    assert "last log lines: Traceback" in status.last_failure


def test_dropped_replica_is_drained_not_killed() -> None:
    config = parse_config(CONFIG)
    controller, actuator, _ = _controller(config)
    smaller = config.model_copy(
        update={"models": [config.models[0].model_copy(update={"replicas": 1})]}
    )

    async def scenario() -> None:
        await controller.tick()
        actuator.set_ready()
        await controller.tick()
        controller.config = smaller
        await controller.tick()
        draining = [
            r for r in controller.fleet_state().endpoints if r.state is ReplicaState.DRAINING
        ]
        assert len(draining) == 1  # still listed, so gateways see it leave; ready-filter skips it
        await asyncio.sleep(0.05)  # drain_grace_s is 0: the drain task runs
        await controller.tick()

    _run(scenario())
    calls = [r.calls for r in actuator.replicas]
    assert sum("drain" in c for c in calls) == 1
    assert not any("stop" in c for c in calls)
    assert len(controller.fleet_state().replicas) == 1


def test_replica_never_ready_fails_at_the_start_deadline() -> None:
    controller, actuator, clock = _controller(parse_config(CONFIG))

    async def scenario() -> None:
        await controller.tick()
        for replica in actuator.replicas:
            replica.health = None  # the actor never answers (e.g. Ray cannot place it)
        clock.now += 50
        await controller.tick()
        assert not any("stop" in r.calls for r in actuator.replicas)
        clock.now += 60
        await controller.tick()

    _run(scenario())
    assert all("stop" in r.calls for r in actuator.replicas[:2])
    assert all(
        "start_timeout_s" in controller.backoff[r.assignment.replica_id].last_failure
        for r in actuator.replicas[:2]
    )


def test_replica_on_a_node_that_left_is_failed_and_placed_elsewhere() -> None:
    config = parse_config(CONFIG)
    nodes = _nodes(config)
    present = list(nodes)
    controller, actuator, clock = _controller(config, lambda: present)

    async def scenario() -> None:
        await controller.tick()
        actuator.set_ready()
        await controller.tick()
        gone = actuator.replicas[0].assignment.node_id
        present[:] = [n for n in nodes if n.node_id != gone]
        await controller.tick()
        clock.now += 100
        await controller.tick()

    _run(scenario())
    live_nodes = {r.assignment.node_id for r in actuator.live()}
    assert actuator.replicas[0].assignment.node_id not in live_nodes
    assert len(actuator.live()) == 2


@pytest.mark.parametrize("engine", ["sim", "vllm"])
def test_engine_spec_follows_the_model(engine: str, tmp_path: Any) -> None:
    (tmp_path / "config.json").write_text(
        '{"model_type": "llama", "hidden_size": 256, "intermediate_size": 512,'
        ' "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,'
        ' "vocab_size": 300, "max_position_embeddings": 2048}'
    )
    text = f"""
fleet:
  node_groups:
    - {{name: cpu, accelerator: CPU, nodes: 1, cpu: {{cores: 4, memory_gib: 16}}}}
models:
  - {{name: tiny, engine: {engine}, weights: {tmp_path}, max_context: 1024, max_num_seqs: 8}}
"""
    controller, actuator, _ = _controller(parse_config(text))
    _run(controller.tick())
    (replica,) = actuator.replicas
    assert replica.spec.kind.value == engine
    assert replica.spec.max_model_len == 1024
    if engine == "vllm":
        assert replica.spec.vllm is not None
        assert replica.spec.vllm.on_cpu and replica.spec.vllm.weights == str(tmp_path)
        assert replica.spec.vllm.cpu_threads == 4
    else:
        assert replica.spec.vllm is None


def test_gateway_demand_reports_add_up_and_go_stale() -> None:
    config = parse_config(CONFIG)  # placement.interval_s 2 (default): stale after 20 s
    controller, _, clock = _controller(config)
    interactive = ClassDemand(TrafficClass.INTERACTIVE, 3.0, 100, 10)
    controller.observe_demand("gw-a", {"qwen2.5-0.5b": (interactive,)})
    clock.now += 15
    controller.observe_demand(
        "gw-b", {"qwen2.5-0.5b": (dataclasses.replace(interactive, rate_per_s=1.0),)}
    )
    assert controller.observed_demand() == {
        "qwen2.5-0.5b": (dataclasses.replace(interactive, rate_per_s=4.0),)
    }
    clock.now += 10  # gw-a last spoke 25 s ago
    assert controller.observed_demand() == {
        "qwen2.5-0.5b": (dataclasses.replace(interactive, rate_per_s=1.0),)
    }


def test_observed_demand_grows_the_plan_with_the_cost_solver() -> None:
    config = parse_config(
        CONFIG.replace("replicas: 2", "replicas: 1").replace(
            "placement: {", "placement: {solver: {name: solver, type: cost-milp-solver}, "
        )
    )
    controller, actuator, _ = _controller(config)
    _run(controller.tick())
    assert len(actuator.replicas) == 1, "no demand: the floor"
    one = controller.last_plan.assignments[0]
    rate = 60.0  # far beyond what one replica sustains within the interactive SLO
    controller.observe_demand(
        "gw", {"qwen2.5-0.5b": (ClassDemand(TrafficClass.INTERACTIVE, rate, 512, 128),)}
    )
    _run(controller.tick())
    assert len(actuator.replicas) > 1
    assert one in controller.last_plan.assignments, "what runs is kept"
    (coverage,) = controller.fleet_state().demand
    assert coverage.demand_per_s == rate
