"""simulate(): conservation, no lost requests, monotone time, exact single-request timing,
priority, routing parity with the gateway's profiles, determinism and the report."""

from __future__ import annotations

import json
import random
from collections.abc import Callable

import pytest

from nodes.performance import ReplicaPerformance
from scheduler.config import GearshiftConfig, ModelConfig
from scheduler.framework.placement import PlacementPlan
from scheduler.framework.routing import Cycle
from scheduler.placement.shapes import group_accelerator, perf_profile, performance
from scheduler.plugins import PluginRegistry
from scheduler.routing.profiles import build_profiles
from scheduler.simulator import SimulationReport, TraceRequest, simulate, synthetic_trace
from scheduler.simulator.engine import EventLoop
from scheduler.simulator.run import RouteRecord
from scheduler.types import TrafficClass

Fleet = Callable[..., tuple[GearshiftConfig, PlacementPlan]]
MODEL = "qwen2.5-0.5b"
MIX = {TrafficClass.INTERACTIVE: 2.0, TrafficClass.STANDARD: 2.0, TrafficClass.BATCH: 1.0}


def _trace(seed: int = 1, *, rate: float = 40.0, bursty: bool = True) -> list[TraceRequest]:
    return synthetic_trace(
        random.Random(seed),
        model=MODEL,
        duration_s=10.0,
        rate_per_s=rate,
        mix=MIX,
        prompt=(600, 300),
        output=(60, 40),
        bursty=bursty,
    )


def _perf(
    config: GearshiftConfig, plan: PlacementPlan, replica_id: str
) -> tuple[ModelConfig, ReplicaPerformance]:
    assignment = next(a for a in plan.assignments if a.replica_id == replica_id)
    group = next(g for g in config.fleet.node_groups if assignment.node_id in g.node_ids())
    model = config.model(assignment.model)
    assert model is not None
    spec = group_accelerator(group)
    return model, performance(
        model, spec, assignment.tensor_parallel, config.placement.gpu_memory_utilization
    )


def test_every_request_is_completed_or_rejected_and_tokens_are_conserved(fleet: Fleet) -> None:
    config, plan = fleet()
    trace = _trace() + [TraceRequest(3.0, 10, 10, TrafficClass.STANDARD, "no-such-model")]
    times: list[float] = []
    report = simulate(config, plan, trace, seed=3, on_event=times.append)

    assert len(report.outcomes) == len(trace)
    assert all(o.completed != (o.rejection is not None) for o in report.outcomes)
    assert sum(c.requests for c in report.classes.values()) == len(trace)
    for c in report.classes.values():
        assert c.completed + c.rejected == c.requests
    served = sum(o.request.output_tokens for o in report.outcomes if o.completed)
    assert report.tokens_generated == served
    assert report.classes[TrafficClass.STANDARD].rejections["no_replica"] == 1

    assert times == sorted(times)
    for o in report.outcomes:
        if o.completed:
            assert o.first_token_at is not None and o.finished_at is not None
            assert o.request.arrived_at <= o.first_token_at <= o.finished_at
    assert report.simulated_s == pytest.approx(times[-1] - trace[0].arrived_at)


def test_a_lone_request_takes_one_prefill_then_one_decode_step_per_further_token(
    fleet: Fleet,
) -> None:
    config, plan = fleet(replicas=1)
    replica_id = plan.assignments[0].replica_id
    _, perf = _perf(config, plan, replica_id)
    prompt, output = 700, 5
    report = simulate(
        config, plan, [TraceRequest(0.0, prompt, output, TrafficClass.STANDARD, MODEL)]
    )

    (outcome,) = report.outcomes
    assert outcome.replica_id == replica_id
    assert outcome.ttft_s == perf.prefill_seconds(prompt)
    finish = perf.prefill_seconds(prompt)
    for produced in range(1, output):
        finish += perf.decode_step_seconds(1, prompt + produced)
    assert outcome.finished_at == finish
    assert report.simulated_s == finish
    busy = report.utilization[plan.assignments[0].accelerator]
    assert busy == pytest.approx(1.0)


def test_an_interactive_request_overtakes_earlier_batch_work_on_a_saturated_replica(
    fleet: Fleet,
) -> None:
    config, plan = fleet(max_num_seqs=2, replicas=1)
    filler = [TraceRequest(0.0, 2000, 400, TrafficClass.BATCH, MODEL) for _ in range(4)]
    early_batch = TraceRequest(0.01, 100, 10, TrafficClass.BATCH, MODEL)
    interactive = TraceRequest(0.02, 100, 10, TrafficClass.INTERACTIVE, MODEL)
    report = simulate(config, plan, [*filler, early_batch, interactive])

    by_request = {id(o.request): o for o in report.outcomes}
    assert all(o.completed for o in report.outcomes)
    first_interactive = by_request[id(interactive)].first_token_at
    first_batch = by_request[id(early_batch)].first_token_at
    assert first_interactive is not None and first_batch is not None
    assert first_interactive < first_batch


def test_batch_beyond_queue_headroom_is_rejected_with_the_filter_as_reason(fleet: Fleet) -> None:
    config, plan = fleet(max_num_seqs=1, replicas=1)
    trace = [TraceRequest(0.0, 500, 200, TrafficClass.BATCH, MODEL) for _ in range(20)]
    report = simulate(config, plan, trace)

    batch = report.classes[TrafficClass.BATCH]
    assert batch.requests == 20 and batch.rejected > 0
    assert batch.completed + batch.rejected == 20
    assert all(reason.startswith("routing:queue-headroom/") for reason in batch.rejections)
    assert all(o.rejection_detail for o in report.outcomes if o.rejection)


def test_each_routing_choice_is_what_the_gateways_profile_picks(fleet: Fleet) -> None:
    config, plan = fleet()
    records: list[RouteRecord] = []
    report = simulate(config, plan, _trace(rate=20.0), seed=5, on_route=records.append)
    gateway = build_profiles(PluginRegistry.from_entry_points(), config.routing)

    assert len(records) == len(report.outcomes)
    chosen = {id(o.request): o.replica_id for o in report.outcomes}
    assert len(set(chosen.values())) > 1  # the load spreads over the fleet
    for record in records:
        for view in record.candidates:
            model, perf = _perf(config, plan, view.replica_id)
            assert view.perf == perf_profile(model, perf)  # as the controller builds it
            assert view.load.fresh and view.load.in_flight == view.load.running + view.load.waiting
        rng = random.Random()
        rng.setstate(record.rng_state)
        expected = gateway[record.request.traffic_class].run(
            record.request, record.candidates, Cycle(now=record.now, rng=rng)
        )
        assert expected.picks[:1] == record.decision.picks[:1]
    loaded = [r for r in records if any(v.load.running for v in r.candidates)]
    assert loaded, "some decisions must be taken under load"


def test_same_seed_same_report_and_the_summary_is_json(fleet: Fleet) -> None:
    config, plan = fleet()
    first = simulate(config, plan, _trace(2), seed=9)
    assert first == simulate(config, plan, _trace(2), seed=9)
    summary = first.to_dict()
    assert json.loads(json.dumps(summary)) == summary
    assert set(summary["classes"]) == {"interactive", "standard", "batch"}


def test_the_report_prices_the_plan_and_counts_slo_tokens(fleet: Fleet) -> None:
    config, plan = fleet()
    report: SimulationReport = simulate(config, plan, _trace(4, rate=10.0, bursty=False))

    assert report.cost_per_hour == plan.cost_per_hour
    assert report.cost_total == pytest.approx(plan.cost_per_hour * report.simulated_s / 3600)
    slo_tokens = sum(c.tokens_within_slo for c in report.classes.values())
    assert slo_tokens > 0
    assert report.cost_per_million_slo_tokens == pytest.approx(report.cost_total / slo_tokens * 1e6)
    for cls, c in report.classes.items():
        targets = config.traffic_classes.targets(cls)
        meeting = [
            o for o in report.outcomes if o.request.traffic_class is cls and o.meets(targets)
        ]
        assert c.slo_attainment == len(meeting) / c.requests
        assert c.tokens_within_slo == sum(o.request.output_tokens for o in meeting)
        assert c.ttft_p50_s is not None and c.ttft_p99_s is not None
        assert 0 < c.ttft_p50_s <= c.ttft_p99_s
    assert set(report.utilization) == {a.accelerator for a in plan.assignments}
    assert all(0 < u <= 1 for u in report.utilization.values())


def test_a_missed_ttft_target_fails_the_slo(fleet: Fleet) -> None:
    config, plan = fleet(replicas=1)
    standard = config.traffic_classes.standard.model_copy(update={"ttft_s": 1e-9})
    classes = config.traffic_classes.model_copy(update={"standard": standard})
    strict = config.model_copy(update={"traffic_classes": classes})
    trace = [TraceRequest(0.0, 100, 5, TrafficClass.STANDARD, MODEL)]
    assert simulate(config, plan, trace).classes[TrafficClass.STANDARD].slo_attainment == 1.0
    missed = simulate(strict, plan, trace).classes[TrafficClass.STANDARD]
    assert missed.slo_attainment == 0.0 and missed.tokens_within_slo == 0 and missed.completed == 1


def test_a_request_queued_mid_run_joins_at_the_next_decode_step_boundary(fleet: Fleet) -> None:
    # The decode run of A is timed ahead in chunks; B arrives during A's third decode step
    # and must be admitted exactly when that step ends, as with one event per step.
    config, plan = fleet(replicas=1)
    _, perf = _perf(config, plan, plan.assignments[0].replica_id)
    step, prefill = perf.decode_step_seconds, perf.prefill_seconds
    a = TraceRequest(0.0, 700, 50, TrafficClass.STANDARD, MODEL)
    third_step_starts = prefill(700) + step(1, 701) + step(1, 702)
    b = TraceRequest(third_step_starts + step(1, 703) / 2, 300, 5, TrafficClass.STANDARD, MODEL)
    times: list[float] = []
    report = simulate(config, plan, [a, b], on_event=times.append)

    joined = third_step_starts + step(1, 703)
    b_first = joined + prefill(300)
    a_produced = 4  # its prefill token and three decode steps
    mean = ((700 + a_produced) + (300 + 1)) // 2
    b_done = b_first
    for k in range(4):
        b_done += step(2, mean + k)
    a_done = b_done
    for k in range(50 - a_produced - 4):
        a_done += step(1, 700 + a_produced + 4 + k)
    outcome = {o.request: o for o in report.outcomes}
    assert outcome[b].first_token_at == b_first and outcome[b].finished_at == b_done
    assert outcome[a].first_token_at == prefill(700) and outcome[a].finished_at == a_done
    assert report.tokens_generated == 55
    assert len(times) < 20, "decode steps are not one event each"


def test_a_request_that_cannot_be_admitted_does_not_cut_the_run_short(fleet: Fleet) -> None:
    config, plan = fleet(max_num_seqs=1, replicas=1)
    _, perf = _perf(config, plan, plan.assignments[0].replica_id)
    a = TraceRequest(0.0, 500, 40, TrafficClass.STANDARD, MODEL)
    b = TraceRequest(0.05, 200, 3, TrafficClass.STANDARD, MODEL)  # no free batch slot
    report = simulate(config, plan, [a, b])

    outcome = {o.request: o for o in report.outcomes}
    a_done = perf.prefill_seconds(500)
    for k in range(39):
        a_done += perf.decode_step_seconds(1, 501 + k)
    assert outcome[a].finished_at == a_done
    assert outcome[b].first_token_at == a_done + perf.prefill_seconds(200)


def test_a_cancelled_action_never_runs_and_is_not_an_event() -> None:
    seen: list[float] = []
    ran: list[str] = []
    loop = EventLoop(on_event=seen.append)
    loop.at(1.0, lambda now: ran.append("a"))
    doomed = loop.at(2.0, lambda now: ran.append("b"))
    loop.at(3.0, lambda now: ran.append("c"))
    loop.cancel(doomed)
    loop.run()
    assert ran == ["a", "c"] and seen == [1.0, 3.0] and loop.now == 3.0
    with pytest.raises(RuntimeError, match="before now"):
        loop.at(2.5, lambda now: None)
