"""``simulate``: replay a trace on a placement plan through the gateway's own routing profiles.

Every arrival becomes a ``RouteRequest`` routed by ``build_profiles(registry, config.routing)``
over ``EndpointView``s built as the controller builds them (``perf_profile`` of the replica's
performance model), whose load is the simulated replica's exact state; ``picks[0]`` gets the
request, with the engine priority of its class. A request with no pick, of an unknown model or
too large for the chosen replica's KV cache is rejected with its reason: none is lost.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from scheduler.config import GearshiftConfig, NodeGroup
from scheduler.errors import ConfigError
from scheduler.framework.placement import PlacementPlan, ReplicaAssignment
from scheduler.framework.routing import Cycle, EndpointView, EngineLoad, RouteRequest
from scheduler.placement.shapes import group_accelerator, perf_profile, performance
from scheduler.plugins import PluginRegistry
from scheduler.routing.pipeline import RoutingDecision, RoutingProfile
from scheduler.routing.profiles import build_profiles
from scheduler.simulator.engine import Action, EventLoop
from scheduler.simulator.replica import Job, VirtualReplica
from scheduler.simulator.report import RequestOutcome, SimulationReport, class_report
from scheduler.simulator.step_times import CachedStepTimes, engine_token_budget
from scheduler.simulator.trace import TraceRequest
from scheduler.types import ReplicaState, TrafficClass


@dataclass(frozen=True, slots=True)
class RouteRecord:
    """One routing cycle as the simulator ran it, for tests and ``explain``-style reports."""

    now: float
    request: RouteRequest
    candidates: tuple[EndpointView, ...]
    rng_state: Any
    """``random.Random.getstate()`` of the cycle's RNG before the pipeline ran."""
    decision: RoutingDecision
    sequence: int = 0
    """The cycle's ``sequence``: requests for the model routed before this one."""


@dataclass(slots=True)
class SimReplica:
    """A planned replica: its endpoint (load left empty) and its batching state."""

    assignment: ReplicaAssignment
    endpoint: EndpointView
    engine: VirtualReplica
    _view: EndpointView | None = None
    _view_version: int = -1

    def view(self) -> EndpointView:
        """The endpoint with its load as a fresh scrape plus the gateway's in-flight count."""
        engine = self.engine
        if self._view is None or self._view_version != engine.version:
            outstanding = engine.running + engine.waiting
            load = EngineLoad(
                engine.running,
                engine.waiting,
                engine.kv_usage,
                outstanding,
                fresh=True,
                interactive=engine.interactive,
                interactive_until=engine.interactive_until,
            )
            self._view = replace(self.endpoint, load=load)
            self._view_version = engine.version
        return self._view


def sim_replicas(config: GearshiftConfig, plan: PlacementPlan) -> list[SimReplica]:
    """One ready replica per assignment, sorted by id; ``ConfigError`` for an unknown model or
    a node of no configured group."""
    groups: dict[str, NodeGroup] = {
        node_id: group for group in config.fleet.node_groups for node_id in group.node_ids()
    }
    utilization = config.placement.gpu_memory_utilization
    step_times: dict[tuple[str, str, int], CachedStepTimes] = {}
    replicas = []
    for assignment in sorted(plan.assignments, key=lambda a: a.replica_id):
        model = config.model(assignment.model)
        group = groups.get(assignment.node_id)
        if model is None or group is None:
            raise ConfigError(
                f"replica {assignment.replica_id}: model `{assignment.model}` or node "
                f"`{assignment.node_id}` is not in the config"
            )
        spec = group_accelerator(group)
        perf = performance(model, spec, assignment.tensor_parallel, utilization)
        endpoint = EndpointView(
            replica_id=assignment.replica_id,
            model=assignment.model,
            accelerator=assignment.accelerator,
            node_id=assignment.node_id,
            url=f"sim://{assignment.replica_id}",
            state=ReplicaState.READY,
            price_per_hour=assignment.price_per_hour,
            ownership=group.ownership,
            perf=perf_profile(model, perf),
        )
        key = (model.name, group.name, assignment.tensor_parallel)
        if key not in step_times:
            step_times[key] = CachedStepTimes(perf)
        engine = VirtualReplica(
            assignment.replica_id,
            step_times[key],
            max_num_seqs=model.max_num_seqs,
            max_num_batched_tokens=engine_token_budget(spec),
        )
        replicas.append(SimReplica(assignment, endpoint, engine))
    return replicas


def simulate(
    config: GearshiftConfig,
    plan: PlacementPlan,
    trace: Sequence[TraceRequest],
    *,
    seed: int = 0,
    registry: PluginRegistry | None = None,
    on_route: Callable[[RouteRecord], None] | None = None,
    on_event: Action | None = None,
) -> SimulationReport:
    """Run ``trace`` (any order; replayed by arrival) on ``plan`` until every request is done."""
    profiles = build_profiles(registry or PluginRegistry.from_entry_points(), config.routing)
    run = _Run(config, sim_replicas(config, plan), profiles, random.Random(seed), on_route)
    loop = EventLoop(on_event=on_event)
    arrivals = sorted(trace, key=lambda request: request.arrived_at)

    def arrive(index: int) -> Action:
        def action(now: float) -> None:
            run.route(arrivals[index], now, loop)
            if index + 1 < len(arrivals):
                loop.at(arrivals[index + 1].arrived_at, arrive(index + 1))

        return action

    if arrivals:
        loop.at(arrivals[0].arrived_at, arrive(0))
    loop.run()
    start = arrivals[0].arrived_at if arrivals else 0.0
    end = max(loop.now, arrivals[-1].arrived_at) if arrivals else 0.0
    return run.report(plan, end - start)


class _Run:
    """The mutable state of one simulation: replicas, jobs and refused requests."""

    def __init__(
        self,
        config: GearshiftConfig,
        replicas: list[SimReplica],
        profiles: dict[TrafficClass, RoutingProfile],
        rng: random.Random,
        on_route: Callable[[RouteRecord], None] | None,
    ) -> None:
        self._config = config
        self._replicas = replicas
        self._by_id = {replica.endpoint.replica_id: replica for replica in replicas}
        self._by_model: dict[str, list[SimReplica]] = {model.name: [] for model in config.models}
        for replica in replicas:
            self._by_model.setdefault(replica.endpoint.model, []).append(replica)
        self._served = {model.name for model in config.models}
        self._priority = {
            cls: config.traffic_classes.targets(cls).engine_priority for cls in TrafficClass
        }
        self._ttft_target = {
            cls: config.traffic_classes.targets(cls).ttft_s for cls in TrafficClass
        }
        self._yield_s = {
            cls: config.gateway.admission.limits(cls).yield_to_interactive_s for cls in TrafficClass
        }
        self._profiles = profiles
        self._rng = rng
        self._on_route = on_route
        self._routed: dict[str, int] = {}
        self._pending: dict[str, int] = {}
        """replica id → the event-loop handle of its phase's end."""
        self._jobs: list[tuple[Job, str]] = []
        self._refused: list[RequestOutcome] = []

    def route(self, request: TraceRequest, now: float, loop: EventLoop) -> None:
        planned = self._by_model.get(request.model, ())
        if request.model not in self._served or not planned:
            detail = f"no replica of `{request.model}` is planned"
            self._refused.append(
                RequestOutcome(request, rejection="no_replica", rejection_detail=detail)
            )
            return
        candidates = tuple(replica.view() for replica in planned)
        route_request = RouteRequest(
            request.model,
            request.traffic_class,
            request.prompt_tokens,
            request.output_tokens,
            ttft_target_s=self._ttft_target[request.traffic_class],
            yield_s=self._yield_s[request.traffic_class],
        )
        sequence = self._routed.get(request.model, 0)
        self._routed[request.model] = sequence + 1
        state = self._rng.getstate() if self._on_route is not None else None
        decision = self._profiles[request.traffic_class].run(
            route_request, candidates, Cycle(now=now, rng=self._rng, sequence=sequence)
        )
        if self._on_route is not None:
            record = RouteRecord(now, route_request, candidates, state, decision, sequence)
            self._on_route(record)
        if not decision.picks:
            self._refused.append(_refused_by_routing(request, decision))
            return
        replica = self._by_id[decision.picks[0]]
        engine = replica.engine
        refusal = engine.refusal(request)
        if refusal is not None:
            self._refused.append(
                RequestOutcome(
                    request, engine.replica_id, rejection="kv_too_small", rejection_detail=refusal
                )
            )
            return
        job = Job(request, self._priority[request.traffic_class], order=len(self._jobs))
        self._jobs.append((job, engine.replica_id))
        if engine.idle:
            engine.submit(job, now)
            self._schedule(engine, engine.start(now), loop)
            return
        sooner = engine.submit(job, now)
        if sooner is not None:
            loop.cancel(self._pending[engine.replica_id])
            self._schedule(engine, sooner, loop)

    def _schedule(self, engine: VirtualReplica, end: float | None, loop: EventLoop) -> None:
        """Finish the engine's phase at ``end``, then schedule the next one."""
        if end is not None:
            self._pending[engine.replica_id] = loop.at(
                end, lambda now: self._schedule(engine, engine.finish(now), loop)
            )

    def report(self, plan: PlacementPlan, simulated_s: float) -> SimulationReport:
        outcomes = sorted(
            [
                RequestOutcome(job.request, replica_id, job.first_token_at, job.finished_at)
                for job, replica_id in self._jobs
            ]
            + self._refused,
            key=lambda outcome: outcome.request.arrived_at,
        )
        classes = {
            cls: class_report(
                [o for o in outcomes if o.request.traffic_class is cls],
                self._config.traffic_classes.targets(cls),
            )
            for cls in TrafficClass
        }
        slo_tokens = sum(c.tokens_within_slo for c in classes.values())
        cost_total = plan.cost_per_hour * simulated_s / 3600.0
        return SimulationReport(
            classes=classes,
            cost_per_hour=plan.cost_per_hour,
            simulated_s=simulated_s,
            cost_total=cost_total,
            cost_per_million_slo_tokens=cost_total / slo_tokens * 1e6 if slo_tokens else None,
            utilization=self._utilization(simulated_s),
            tokens_generated=sum(r.engine.tokens_generated for r in self._replicas),
            outcomes=tuple(outcomes),
        )

    def _utilization(self, simulated_s: float) -> dict[str, float]:
        busy: dict[str, float] = {}
        devices: dict[str, int] = {}
        for replica in self._replicas:
            accelerator, tp = replica.assignment.accelerator, replica.assignment.tensor_parallel
            busy[accelerator] = busy.get(accelerator, 0.0) + replica.engine.busy_s * tp
            devices[accelerator] = devices.get(accelerator, 0) + tp
        return {
            accelerator: busy[accelerator] / (devices[accelerator] * simulated_s)
            if simulated_s > 0
            else 0.0
            for accelerator in sorted(busy)
        }


def _refused_by_routing(request: TraceRequest, decision: RoutingDecision) -> RequestOutcome:
    causes = sorted({f"{r.plugin}/{r.code or r.verdict.name.lower()}" for r in decision.rejections})
    detail = "; ".join(f"{r.subject}: {r.reason}" for r in decision.rejections[:4])
    return RequestOutcome(
        request,
        rejection="routing:" + (",".join(causes) or "no_pick"),
        rejection_detail=detail or "the picker chose no replica",
    )
