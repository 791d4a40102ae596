"""Baselines: every run builds and simulates the same trace; single-type fleets hold one type;
the class-agnostic planner sees one class; round robin takes turns; infeasible runs say why."""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable

import pytest

from scheduler.config import GearshiftConfig, parse_config
from scheduler.framework.placement import PlacementPlan
from scheduler.placement.planner import build_problem
from scheduler.plugins import PluginRegistry
from scheduler.simulator import TraceRequest, synthetic_trace
from scheduler.simulator.baselines import (
    CLASS_AGNOSTIC,
    GEARSHIFT,
    ROUND_ROBIN,
    SINGLE_TYPE_MIN_ACCELERATORS,
    class_agnostic_planning_config,
    run_baselines,
    run_gearshift,
    single_type_accelerators,
    single_type_plan,
)
from scheduler.simulator.demand import planned_demand
from scheduler.types import TrafficClass

Planner = Callable[[GearshiftConfig], PlacementPlan]
REGISTRY = PluginRegistry.from_entry_points()
MODEL = "qwen2.5-0.5b"

SMALL = """
fleet:
  node_groups:
    - {name: h100, accelerator: H100-SXM, nodes: 1}
    - {name: l40s, accelerator: L40S, nodes: 1}
    - {name: l4, accelerator: L4, nodes: 2, price_per_node_hour: 0.3, ownership: spot}
models:
  - {name: qwen2.5-0.5b, max_context: 4096, replicas: 2, accelerators: [L4]}
"""

COST = """
fleet:
  node_groups:
    - {name: h100, accelerator: H100-SXM, nodes: 1}
    - {name: l4, accelerator: L4, nodes: 2, price_per_node_hour: 0.3, ownership: spot}
models:
  - {name: llama-3.1-8b, max_context: 32768, tensor_parallel: 1, replicas: 1}
placement:
  solver: {name: solver, type: cost-milp-solver}
workload:
  - {model: llama-3.1-8b, class: interactive, rate_per_s: %(interactive)s,
     prompt_tokens: 1000, output_tokens: 200}
  - {model: llama-3.1-8b, class: batch, rate_per_s: 2, prompt_tokens: 3000, output_tokens: 300}
"""


def _trace(model: str = MODEL, seed: int = 1, rate: float = 8.0) -> list[TraceRequest]:
    return synthetic_trace(
        random.Random(seed),
        model=model,
        duration_s=8.0,
        rate_per_s=rate,
        mix={TrafficClass.INTERACTIVE: 1, TrafficClass.STANDARD: 1, TrafficClass.BATCH: 2},
        prompt=(600, 300),
        output=(40, 20),
    )


def _recording(planner: Planner, seen: list[GearshiftConfig]) -> Planner:
    def plan(config: GearshiftConfig) -> PlacementPlan:
        seen.append(config)
        return planner(config)

    return plan


def test_every_baseline_builds_and_runs_on_the_same_trace(planner: Planner) -> None:
    trace = _trace()
    config = planned_demand(parse_config(SMALL), trace).config
    gearshift = run_gearshift(config, trace, planner, REGISTRY, seed=2)
    baselines = run_baselines(config, trace, planner, REGISTRY, gearshift.plan, seed=2)

    names = [run.name for run in [gearshift, *baselines]]
    assert names == [GEARSHIFT, "H100-SXM-only", "A100-80GB-only", "L4-only", "L40S-only",
                     CLASS_AGNOSTIC, ROUND_ROBIN]  # fmt: skip
    for run in [gearshift, *baselines]:
        assert run.plan.assignments, run.name
        assert run.feasible, (run.name, run.unmet)
        assert len(run.report.outcomes) == len(trace)
        assert sum(c.requests for c in run.report.classes.values()) == len(trace)
        assert run.cost_per_hour == run.plan.cost_per_hour == run.report.cost_per_hour
        assert run.cost_per_million_tokens == run.report.cost_per_million_slo_tokens
        document = run.to_dict(gearshift)
        assert json.loads(json.dumps(document)) == document
        assert {"cost_per_hour", "cost_per_million_tokens", "slo_attainment", "plan",
                "feasible", "unmet", "notes", "ratio_vs_gearshift"} <= set(document)  # fmt: skip
        assert set(document["slo_attainment"]) == {"interactive", "standard", "batch"}
        assert document["plan"] == dict(Counter(a.accelerator for a in run.plan.assignments))
    assert gearshift.ratio_to(gearshift) == 1.0
    # Same trace and seed, Gearshift's own plan: only the routing differs.
    round_robin = baselines[-1]
    assert round_robin.plan == gearshift.plan


def test_a_single_type_fleet_holds_only_that_type(planner: Planner) -> None:
    config = parse_config(SMALL)
    assert single_type_accelerators(config) == ["H100-SXM", "A100-80GB", "L4", "L40S"]
    for name in single_type_accelerators(config):
        single, plan, notes = single_type_plan(config, name, planner)
        assert {group.accelerator for group in single.fleet.node_groups} == {name}
        assert {a.accelerator for a in plan.assignments} == {name}
        assert all(not model.accelerators for model in single.models)  # allowlists lifted
        kept = [g for g in config.fleet.node_groups if g.accelerator == name]
        assert single.fleet.node_groups[: len(kept)] == kept  # the config's own, as priced
        extra = single.fleet.node_groups[-1]
        assert extra.ownership.value == "on-demand" and extra.price_per_node_hour is None
        assert extra.accelerators_per_node * extra.nodes >= SINGLE_TYPE_MIN_ACCELERATORS
        assert any("allowlists lifted" in note for note in notes)


def test_a_single_type_fleet_grows_until_the_cost_solver_covers_the_demand(
    planner: Planner,
) -> None:
    config = parse_config(COST % {"interactive": 400})
    single, plan, notes = single_type_plan(config, "H100-SXM", planner)
    extra = single.fleet.node_groups[-1]
    used = sum(a.tensor_parallel for a in plan.assignments)
    assert used > SINGLE_TYPE_MIN_ACCELERATORS  # more than the first offer
    assert extra.nodes * extra.accelerators_per_node > used  # it stopped growing once covered
    assert not plan.unplaced and all(c.share >= 1.0 - 1e-6 for c in plan.coverage)
    assert plan.coverage, "the cost solver reports coverage"
    assert f"the plan uses {used - 1}" in notes[0]  # the config's own H100 is used too


def test_an_infeasible_baseline_is_reported_with_the_solvers_reasons(planner: Planner) -> None:
    # 32K tokens of context do not fit an L4's KV cache at TP 1: nothing to place there.
    config = parse_config(COST % {"interactive": 1})
    trace = _trace("llama-3.1-8b", rate=2.0)
    gearshift = run_gearshift(config, trace, planner, REGISTRY)
    runs = {r.name: r for r in run_baselines(config, trace, planner, REGISTRY, gearshift.plan)}

    l4 = runs["L4-only"]
    assert not l4.feasible and not l4.plan.assignments
    assert any("KV cache holds" in reason and "max_context 32768" in reason for reason in l4.unmet)
    document = l4.to_dict(gearshift)
    assert document["feasible"] is False and document["unmet"]
    assert document["cost_per_million_tokens"] is None and document["ratio_vs_gearshift"] is None
    assert l4.report.classes[TrafficClass.INTERACTIVE].rejections == {
        "no_replica": l4.report.classes[TrafficClass.INTERACTIVE].requests
    }
    assert gearshift.feasible and runs["H100-SXM-only"].feasible


def test_the_class_agnostic_planner_sees_one_class_with_the_strictest_targets(
    planner: Planner,
) -> None:
    config = parse_config(COST % {"interactive": 4})
    merged = class_agnostic_planning_config(config)
    (item,) = merged.workload
    assert item.traffic_class is TrafficClass.INTERACTIVE
    assert item.rate_per_s == 6.0
    assert item.prompt_tokens == round((4 * 1000 + 2 * 3000) / 6)
    assert item.output_tokens == round((4 * 200 + 2 * 300) / 6)
    targets = merged.traffic_classes.interactive
    assert targets.ttft_s == config.traffic_classes.interactive.ttft_s
    assert targets.deadline_s == config.traffic_classes.batch.deadline_s

    seen: list[GearshiftConfig] = []
    trace = _trace("llama-3.1-8b", rate=2.0)
    gearshift = run_gearshift(config, trace, planner, REGISTRY)
    run_baselines(config, trace, _recording(planner, seen), REGISTRY, gearshift.plan)
    assert merged in seen
    problem = build_problem(merged, [], [])
    assert [[c.traffic_class for c in d.classes] for d in problem.demands] == [
        [TrafficClass.INTERACTIVE]
    ]


def test_round_robin_takes_turns_over_gearshifts_replicas(planner: Planner) -> None:
    trace = _trace(rate=6.0)
    config = planned_demand(parse_config(SMALL), trace).config
    gearshift = run_gearshift(config, trace, planner, REGISTRY)
    round_robin = run_baselines(config, trace, planner, REGISTRY, gearshift.plan)[-1]
    served = Counter(o.replica_id for o in round_robin.report.outcomes)
    assert set(served) == {a.replica_id for a in gearshift.plan.assignments}
    assert max(served.values()) - min(served.values()) <= 1


@pytest.mark.parametrize("span", [None, 20.0])
def test_trace_demand_reaches_the_planner_when_the_config_has_no_workload(
    span: float | None,
) -> None:
    trace = [
        TraceRequest(0.0, 100, 10, TrafficClass.INTERACTIVE, MODEL),
        TraceRequest(4.0, 300, 30, TrafficClass.INTERACTIVE, MODEL),
        TraceRequest(10.0, 1000, 5, TrafficClass.BATCH, MODEL),
        TraceRequest(1.0, 10, 1, TrafficClass.BATCH, "not-served"),
    ]
    demand = planned_demand(parse_config(SMALL), trace, span_s=span)
    assert demand.source.value == "trace"
    seconds = span or 10.0
    rates = {(w.model, w.traffic_class): w.rate_per_s for w in demand.workload}
    assert rates == {
        (MODEL, TrafficClass.INTERACTIVE): 2 / seconds,
        (MODEL, TrafficClass.BATCH): 1 / seconds,
    }
    interactive = demand.workload[0]
    assert (interactive.prompt_tokens, interactive.output_tokens) == (200, 20)

    declared = parse_config(COST % {"interactive": 3})
    kept = planned_demand(declared, trace)
    assert kept.source.value == "config" and kept.config == declared
