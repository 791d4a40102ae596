"""The controller: a Ray actor running the reconcile loop and publishing the fleet state.

One round: observe (probe replicas, read Ray's nodes) → plan (solver) → reconcile (actions)
→ actuate; in Kubernetes (``kubernetes.enabled``) Ray's nodes are first enriched from their
Node objects, and worker groups are resized last (``KubernetesSync``). A replica that fails is
stopped and forgotten; the next plan places it again, after an exponential back-off per replica
id so a crash loop does not spin.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import ray

from nodes.engines.launch import EngineSpec
from scheduler.config import GearshiftConfig, ModelConfig
from scheduler.controlplane.actuator import RayActuator
from scheduler.controlplane.engine_specs import replica_launch
from scheduler.controlplane.kubernetes_sync import KubernetesSync
from scheduler.controlplane.replica import ReplicaHealth
from scheduler.errors import ControlPlaneError
from scheduler.framework.placement import (
    ClassDemand,
    NodeView,
    PlacementPlan,
    PlacementSolver,
    ReplicaAssignment,
)
from scheduler.framework.routing import EndpointView, PerfProfile
from scheduler.inventory import ROLE_HEAD, groups_of_joined_nodes, node_view
from scheduler.placement.actions import StartReplica, StopReplica
from scheduler.placement.demand import combine
from scheduler.placement.planner import plan as make_plan
from scheduler.placement.reconciler import reconcile
from scheduler.plugins import PluginRegistry
from scheduler.state import FleetState, NodeStatus, ReplicaStatus
from scheduler.types import LABEL_ROLE, ReplicaState

log = logging.getLogger(__name__)

_PROBE_TIMEOUT_S = 3.0
_STOP_TIMEOUT_S = 10.0
_MAX_BACKOFF_S = 60.0
_DEMAND_REPORT_STALE_ROUNDS = 10
CONTROLLER_NAME = "gearshift-controller"


@dataclass(slots=True)
class _Replica:
    assignment: ReplicaAssignment
    handle: Any
    """The actuator's handle (a ``ReplicaHandle`` for Ray)."""
    engine: str
    perf: PerfProfile
    started_at: float
    state: ReplicaState = ReplicaState.STARTING
    url: str | None = None
    detail: str = ""
    placed_on: str = ""
    pid: int = 0
    engine_pid: int = 0
    log_tail: str = ""


@dataclass(slots=True)
class _Backoff:
    failures: int = 0
    """Consecutive failures; reset when the replica becomes ready."""
    not_before: float = 0.0
    last_failure: str = ""


class Actuator(Protocol):
    """What the controller asks of the actuator (``RayActuator``; a fake in tests)."""

    def start(self, assignment: ReplicaAssignment, spec: EngineSpec, on_gpu: bool) -> Any: ...

    async def probe(self, handle: Any, timeout_s: float) -> ReplicaHealth | None: ...

    async def drain(self, handle: Any, timeout_s: float) -> None: ...

    async def stop(self, handle: Any, timeout_s: float) -> None: ...


Relabel = Callable[[Mapping[str, str], Mapping[str, float]], dict[str, str]]


def ray_nodes(relabel: Relabel | None = None) -> list[NodeView]:
    """Gearshift's nodes as Ray's GCS lists them (alive ones only), their labels first passed
    through ``relabel`` when given (``KubernetesSync.relabel``)."""
    views = []
    for node in ray.nodes():
        labels, resources = node.get("Labels", {}), node.get("Resources", {})
        if relabel is not None:
            labels = relabel(labels, resources)
        view = node_view(labels, resources, node["Alive"])
        if view is not None and view.alive:
            views.append(view)
    return sorted(views, key=lambda view: view.node_id)


class Controller:
    """Reconcile loop state; runs inside the ``ControllerActor`` (or directly in tests, with a
    fake actuator, node source and clock)."""

    def __init__(
        self,
        config: GearshiftConfig,
        solver: PlacementSolver,
        actuator: Actuator | None = None,
        read_nodes: Callable[[], list[NodeView]] = ray_nodes,
        clock: Callable[[], float] = time.monotonic,
        kubernetes: KubernetesSync | None = None,
    ) -> None:
        self.config = config
        self.kubernetes = kubernetes
        """Node inventory and worker-group scaling in Kubernetes (``kubernetes.enabled``)."""
        self.fleet_config = config
        """``config`` plus the groups of nodes that joined on their own (refreshed per round)."""
        self.solver = solver
        self.actuator: Actuator = actuator or RayActuator()
        self._read_nodes = read_nodes
        self._clock = clock
        self.replicas: dict[str, _Replica] = {}
        self.backoff: dict[str, _Backoff] = {}
        self.restarts: Counter[str] = Counter()
        self.last_plan = PlacementPlan(())
        self.nodes: dict[str, NodeView] = {}
        self.version = 0
        self._loop_task: asyncio.Task[None] | None = None
        self._drains: dict[str, asyncio.Task[None]] = {}
        self._demand_reports: dict[str, tuple[float, Mapping[str, tuple[ClassDemand, ...]]]] = {}
        """Per gateway: when it last reported, and the demand it saw."""

    # ---------------------------------------------------------------- loop

    async def start(self) -> None:
        """Run one round now and keep reconciling every ``placement.interval_s``."""
        if self._loop_task is None:
            await self.tick()
            self._loop_task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.config.placement.interval_s)
            try:
                await self.tick()
            except Exception:  # the loop must outlive one bad round; the next retries
                log.exception("reconcile round failed")

    async def tick(self) -> None:
        """One reconcile round."""
        if self.kubernetes is not None:
            await asyncio.to_thread(self.kubernetes.refresh, self._clock())
        self.nodes = {node.node_id: node for node in self._read_nodes()}
        await self._observe()
        serving = {rid: r for rid, r in self.replicas.items() if rid not in self._drains}
        current = [replica.assignment for replica in serving.values()]
        self.fleet_config = self._with_joined_groups()
        observed = self.observed_demand()
        self.last_plan = make_plan(
            self.solver, self.fleet_config, list(self.nodes.values()), current, observed=observed
        )
        now = self._clock()
        ready = {rid for rid, r in serving.items() if r.state is ReplicaState.READY}
        actions = reconcile(self.last_plan, serving, current=current, ready=ready)
        for action in actions:
            if isinstance(action, StartReplica):
                wait = self.backoff.get(action.assignment.replica_id)
                if wait is None or wait.not_before <= now:
                    self._start(action.assignment)
            elif isinstance(action, StopReplica):
                self._begin_drain(action.replica_id)
        if self.kubernetes is not None:
            await self._sync_kubernetes(self.kubernetes, current, observed)
        self.version += 1

    async def _sync_kubernetes(
        self,
        sync: KubernetesSync,
        current: list[ReplicaAssignment],
        observed: Mapping[str, tuple[ClassDemand, ...]],
    ) -> None:
        """Resize worker groups to what the plan needs, off the event loop (it calls the API)."""
        busy = {r.assignment.node_id for r in self.replicas.values()}
        busy |= {assignment.node_id for assignment in self.last_plan.assignments}

        def plan_with(config: GearshiftConfig, nodes: Sequence[NodeView]) -> PlacementPlan:
            return make_plan(self.solver, config, nodes, current, observed=observed)

        try:
            await asyncio.to_thread(
                sync.step,
                self._clock(),
                config=self.fleet_config,
                nodes=list(self.nodes.values()),
                busy=busy,
                plan_with=plan_with,
            )
        except Exception:  # scaling must not stop the reconcile loop; the next sync retries
            log.exception("Kubernetes sync failed")

    async def _observe(self) -> None:
        alive = set(self.nodes)
        replicas = [(rid, r) for rid, r in self.replicas.items() if rid not in self._drains]
        healths = await asyncio.gather(
            *(self.actuator.probe(r.handle, _PROBE_TIMEOUT_S) for _, r in replicas)
        )
        for (replica_id, replica), health in zip(replicas, healths, strict=True):
            if replica.assignment.node_id not in alive:
                health_state, detail = ReplicaState.FAILED, "its node left the cluster"
            elif health is None:
                if self._start_overdue(replica):
                    await self._fail(replica_id, self._overdue_detail())
                continue
            else:
                health_state, detail = health.state, health.detail
                replica.url = health.url or replica.url
                replica.placed_on, replica.pid = health.placed_on, health.pid
                replica.engine_pid, replica.log_tail = health.engine_pid, health.log_tail
                if health_state is ReplicaState.STARTING and self._start_overdue(replica):
                    health_state, detail = ReplicaState.FAILED, self._overdue_detail()
                if health.placed_on and health.placed_on != replica.assignment.node_id:
                    health_state = ReplicaState.FAILED
                    detail = (
                        f"Ray placed it on {health.placed_on}, not {replica.assignment.node_id}"
                    )
            if health_state is ReplicaState.FAILED:
                tail = f" | last log lines: {replica.log_tail}" if replica.log_tail else ""
                await self._fail(replica_id, detail + tail)
                continue
            if health_state is ReplicaState.READY and replica.state is not ReplicaState.READY:
                if replica_id in self.backoff:  # keep last_failure for status
                    self.backoff[replica_id].failures = 0
                log.info("replica %s ready at %s", replica_id, replica.url)
            replica.state, replica.detail = health_state, detail

    # -------------------------------------------------------------- actions

    def _start(self, assignment: ReplicaAssignment) -> None:
        model = self._model(assignment.model)
        node = self.nodes[assignment.node_id]
        group = next(g for g in self.fleet_config.fleet.node_groups if g.name == node.group)
        launch = replica_launch(self.fleet_config, model, group, assignment)
        handle = self.actuator.start(assignment, launch.engine, on_gpu=launch.on_gpu)
        self.replicas[assignment.replica_id] = _Replica(
            assignment, handle, model.engine.value, launch.perf, started_at=self._clock()
        )
        log.info("starting replica %s on %s", assignment.replica_id, assignment.node_id)

    def _with_joined_groups(self) -> GearshiftConfig:
        """The config plus a group for each set of nodes that joined with `node start`."""
        joined = groups_of_joined_nodes(self.config, list(self.nodes.values()))
        if not joined:
            return self.config
        fleet = self.config.fleet.model_copy(
            update={"node_groups": [*self.config.fleet.node_groups, *joined]}
        )
        return self.config.model_copy(update={"fleet": fleet})

    def _start_overdue(self, replica: _Replica) -> bool:
        return self._clock() - replica.started_at > self.config.placement.start_timeout_s

    def _overdue_detail(self) -> str:
        return (
            f"not ready within placement.start_timeout_s ({self.config.placement.start_timeout_s:g}"
            " s): Ray could not place it, or the engine is still loading"
        )

    def _begin_drain(self, replica_id: str) -> None:
        """Take the replica out of the endpoint table now; stop it once idle (or timed out)."""
        replica = self.replicas.get(replica_id)
        if replica is None or replica_id in self._drains:
            return
        replica.state = ReplicaState.DRAINING
        self._drains[replica_id] = asyncio.get_running_loop().create_task(self._drain(replica_id))

    async def _drain(self, replica_id: str) -> None:
        placement = self.config.placement
        try:
            # Gateways learn the new table on their next refresh; until then they may still
            # send requests here, so wait before watching the engine go idle.
            await asyncio.sleep(placement.drain_grace_s)
            replica = self.replicas.get(replica_id)
            if replica is not None:
                await self.actuator.drain(replica.handle, placement.drain_timeout_s)
        finally:
            self.replicas.pop(replica_id, None)
            self._drains.pop(replica_id, None)
        log.info("replica %s drained and stopped", replica_id)

    async def _stop(self, replica_id: str) -> None:
        replica = self.replicas.pop(replica_id, None)
        if replica is not None:
            await self.actuator.stop(replica.handle, _STOP_TIMEOUT_S)

    async def _fail(self, replica_id: str, detail: str) -> None:
        log.warning("replica %s failed: %s", replica_id, detail)
        record = self.backoff.setdefault(replica_id, _Backoff())
        delay = min(_MAX_BACKOFF_S, self.config.placement.restart_backoff_s * 2**record.failures)
        record.failures += 1
        record.not_before = self._clock() + delay
        record.last_failure = detail
        self.restarts[replica_id] += 1
        await self._stop(replica_id)

    async def shutdown(self) -> None:
        """Stop the loop and every replica (gracefully, in parallel)."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
            self._loop_task = None
        for task in list(self._drains.values()):
            task.cancel()
        await asyncio.gather(*self._drains.values(), return_exceptions=True)
        await asyncio.gather(*(self._stop(rid) for rid in list(self.replicas)))

    def observe_demand(
        self, gateway_id: str, demand: Mapping[str, tuple[ClassDemand, ...]]
    ) -> None:
        """A gateway's latest demand estimate (it reports once per reconcile interval)."""
        self._demand_reports[gateway_id] = (self._clock(), demand)

    def observed_demand(self) -> dict[str, tuple[ClassDemand, ...]]:
        """The demand every live gateway reports, summed; a gateway silent for
        ``_DEMAND_REPORT_STALE_ROUNDS`` reconcile intervals is forgotten."""
        stale_before = (
            self._clock() - _DEMAND_REPORT_STALE_ROUNDS * self.config.placement.interval_s
        )
        for gateway_id, (at, _) in list(self._demand_reports.items()):
            if at < stale_before:
                del self._demand_reports[gateway_id]
        return combine({gid: report for gid, (_, report) in self._demand_reports.items()})

    # ---------------------------------------------------------------- reads

    def fleet_state(self) -> FleetState:
        replicas = sorted(self.replicas.values(), key=lambda r: r.assignment.replica_id)
        used: Counter[str] = Counter()
        for r in replicas:
            used[r.assignment.node_id] += r.assignment.tensor_parallel
        return FleetState(
            version=self.version,
            endpoints=tuple(
                EndpointView(
                    replica_id=r.assignment.replica_id,
                    model=r.assignment.model,
                    accelerator=r.assignment.accelerator,
                    node_id=r.assignment.node_id,
                    url=r.url,
                    state=r.state,
                    price_per_hour=r.assignment.price_per_hour,
                    ownership=self.nodes[r.assignment.node_id].ownership,
                    perf=r.perf,
                )
                for r in replicas
                if r.url is not None and r.assignment.node_id in self.nodes
            ),
            replicas=tuple(
                ReplicaStatus(
                    replica_id=r.assignment.replica_id,
                    model=r.assignment.model,
                    node_id=r.assignment.node_id,
                    accelerator=r.assignment.accelerator,
                    tensor_parallel=r.assignment.tensor_parallel,
                    engine=r.engine,
                    state=r.state.value,
                    url=r.url,
                    price_per_hour=r.assignment.price_per_hour,
                    restarts=self.restarts[r.assignment.replica_id],
                    detail=r.detail,
                    placed_on=r.placed_on,
                    pid=r.pid,
                    engine_pid=r.engine_pid,
                    log_tail=r.log_tail,
                    last_failure=self.backoff[r.assignment.replica_id].last_failure
                    if r.assignment.replica_id in self.backoff
                    else "",
                )
                for r in replicas
            ),
            nodes=tuple(
                NodeStatus(
                    node_id=n.node_id,
                    group=n.group,
                    accelerator=n.accelerator,
                    accelerator_count=n.accelerator_count,
                    accelerators_used=used[n.node_id],
                    accelerator_memory_gib=n.accelerator_memory_gib,
                    price_per_hour=n.price_per_hour,
                    ownership=n.ownership.value,
                    alive=n.alive,
                    labels={
                        k: v
                        for k, v in n.labels.items()
                        if not k.startswith(("gearshift.io/", "ray.io/"))
                    },
                )
                for n in self.nodes.values()
            ),
            unplaced=self.last_plan.unplaced,
            planned_replicas=len(self.last_plan.assignments),
            models=tuple(model.name for model in self.config.models),
            demand=self.last_plan.coverage,
            plan_notes=(
                *self.last_plan.notes,
                *(self.kubernetes.report.lines() if self.kubernetes is not None else ()),
            ),
        )

    def _model(self, name: str) -> ModelConfig:
        model = self.config.model(name)
        if model is None:  # the planner only plans configured models
            raise ControlPlaneError(f"the plan names a model that is not configured: {name}")
        return model


class ControllerActor:
    """The Ray actor around ``Controller``: built from the config's JSON inside Ray."""

    def __init__(self, config_json: str) -> None:
        config = GearshiftConfig.model_validate_json(config_json)
        registry = PluginRegistry.from_entry_points()
        kubernetes, read_nodes = None, ray_nodes
        if config.kubernetes.enabled:
            # Imported here: only Kubernetes deployments load the client library.
            from scheduler.controlplane.kubernetes_client import KubernetesClient

            api = KubernetesClient.connect(config.kubernetes.kubeconfig)
            kubernetes = KubernetesSync(config.kubernetes, api)
            read_nodes = functools.partial(ray_nodes, kubernetes.relabel)
        self._controller = Controller(
            config,
            registry.build(config.placement.solver, PlacementSolver),
            read_nodes=read_nodes,
            kubernetes=kubernetes,
        )

    async def start(self) -> None:
        await self._controller.start()

    async def fleet_state(self) -> FleetState:
        return self._controller.fleet_state()

    async def observe_demand(
        self, gateway_id: str, demand: Mapping[str, tuple[ClassDemand, ...]]
    ) -> None:
        self._controller.observe_demand(gateway_id, demand)

    async def shutdown(self) -> None:
        await self._controller.shutdown()


def start_controller(config: GearshiftConfig) -> Any:
    """Create the controller actor on the head node; returns its handle (call ``start``)."""
    actor = ray.remote(ControllerActor).options(
        name=CONTROLLER_NAME,
        num_cpus=0,
        label_selector={LABEL_ROLE: ROLE_HEAD},
        max_concurrency=16,
    )
    return actor.remote(config.model_dump_json())
