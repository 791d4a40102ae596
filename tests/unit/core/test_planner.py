"""The planner: demand from workload and observed traffic, shapes priced and with capacity, and
the replanning knobs handed to the solver."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import pytest

from scheduler.config import GearshiftConfig, parse_config
from scheduler.framework.placement import (
    ClassDemand,
    NodeView,
    PlacementPlan,
    PlacementProblem,
    ReplicaShape,
)
from scheduler.placement.capacity import (
    DEFAULT_BUCKET,
    demand_capacity,
)
from scheduler.placement.planner import build_problem, merged_demand, plan
from scheduler.placement.shapes import group_accelerator, performance
from scheduler.types import TrafficClass

INTERACTIVE, STANDARD, BATCH = TrafficClass.INTERACTIVE, TrafficClass.STANDARD, TrafficClass.BATCH

FLEET = """
fleet:
  node_groups:
    - {name: h100x8, accelerator: H100-SXM, accelerators_per_node: 8, nodes: 1,
       price_per_node_hour: 24.0, marginal_price_per_node_hour: 16.0}
    - {name: l4, accelerator: L4, nodes: 2, price_per_node_hour: 0.3, ownership: spot}
    - {name: cpu, accelerator: CPU, nodes: 1, price_per_node_hour: 0.06,
       marginal_price_per_node_hour: 0.01, ownership: owned, cpu: {cores: 16, memory_gib: 64}}
models:
  - {name: llama-3.1-8b, accelerators: [H100-SXM, L4]}
  - {name: qwen2.5-0.5b, max_context: 4096}
workload:
  - {model: llama-3.1-8b, class: interactive, rate_per_s: 5, prompt_tokens: 600,
     output_tokens: 100}
  - {model: llama-3.1-8b, class: batch, rate_per_s: 2, prompt_tokens: 2000, output_tokens: 300}
placement:
  replan_hysteresis: 0.25
  max_disruptions: 3
"""


@pytest.fixture
def config() -> GearshiftConfig:
    return parse_config(FLEET)


def _shape(problem: PlacementProblem, model: str, group: str, tp: int = 1) -> ReplicaShape:
    (demand,) = [d for d in problem.demands if d.model == model]
    (shape,) = [s for s in demand.shapes if s.group == group and s.tensor_parallel == tp]
    return shape


# ------------------------------------------------------------------------------------ demand


def test_observed_demand_raises_the_workload_per_class_with_its_own_sizes(
    config: GearshiftConfig,
) -> None:
    observed = {
        "llama-3.1-8b": [
            ClassDemand(INTERACTIVE, 3.0, 100, 50),  # below the workload: the workload stays
            ClassDemand(BATCH, 10.0, 1000, 500),  # above it: observed, with its sizes
            ClassDemand(STANDARD, 1.0, 300, 30),  # no workload entry: observed
        ],
        "unknown-model": [ClassDemand(INTERACTIVE, 99.0, 1, 1)],
    }
    assert merged_demand(config, observed) == {
        "llama-3.1-8b": (
            ClassDemand(INTERACTIVE, 5.0, 600, 100),
            ClassDemand(STANDARD, 1.0, 300, 30),
            ClassDemand(BATCH, 10.0, 1000, 500),
        )
    }


def test_a_tie_keeps_the_workloads_sizes_and_no_observation_keeps_the_workload(
    config: GearshiftConfig,
) -> None:
    tie = {"llama-3.1-8b": [ClassDemand(BATCH, 2.0, 10, 10)]}
    workload = (ClassDemand(INTERACTIVE, 5.0, 600, 100), ClassDemand(BATCH, 2.0, 2000, 300))
    assert merged_demand(config, tie)["llama-3.1-8b"] == workload
    assert merged_demand(config)["llama-3.1-8b"] == workload
    assert "qwen2.5-0.5b" not in merged_demand(config)


# ------------------------------------------------------------------------------------ shapes


def test_shapes_carry_the_solver_price_and_interruptibility(
    config: GearshiftConfig, make_fleet_nodes: Callable[..., list[NodeView]]
) -> None:
    problem = build_problem(config, make_fleet_nodes(config), [])
    # Marginal $16 per 8-GPU node: $2 per GPU, times TP.
    h100 = [s for s in problem.demands[0].shapes if s.group == "h100x8"]
    assert [(s.tensor_parallel, s.price_per_hour) for s in h100] == [
        (1, 2.0), (2, 4.0), (4, 8.0), (8, 16.0)
    ]  # fmt: skip
    assert not any(s.interruptible for s in h100)
    l4 = _shape(problem, "llama-3.1-8b", "l4")
    assert (l4.price_per_hour, l4.interruptible) == (0.3, True)
    cpu = _shape(problem, "qwen2.5-0.5b", "cpu")
    assert (cpu.price_per_hour, cpu.interruptible, cpu.on_cpu) == (0.01, False, True)


def test_shapes_carry_capacity_at_the_size_of_each_class_demand(
    config: GearshiftConfig, make_fleet_nodes: Callable[..., list[NodeView]]
) -> None:
    problem = build_problem(config, make_fleet_nodes(config), [])
    shape = _shape(problem, "llama-3.1-8b", "h100x8", tp=2)
    group = config.fleet.node_groups[0]
    model = config.models[0]
    perf = performance(model, group_accelerator(group), 2, 0.9)
    sizes = {
        INTERACTIVE: (600, 100),
        STANDARD: (DEFAULT_BUCKET.prompt_tokens, DEFAULT_BUCKET.output_tokens),
        BATCH: (2000, 300),
    }
    expected = {
        cls: demand_capacity(
            perf, config.traffic_classes.targets(cls), prompt, output, model.max_num_seqs
        ).rate_per_s
        for cls, (prompt, output) in sizes.items()
    }
    assert shape.capacity == expected
    assert all(rate > 0 for rate in expected.values())
    assert shape.capacity_reasons == {}


def test_a_class_a_shape_cannot_serve_has_zero_capacity_and_a_reason(
    config: GearshiftConfig, make_fleet_nodes: Callable[..., list[NodeView]]
) -> None:
    problem = build_problem(config, make_fleet_nodes(config), [])
    l4 = _shape(problem, "llama-3.1-8b", "l4")
    assert l4.fits
    assert l4.capacity[INTERACTIVE] == 0
    assert l4.capacity_reasons[INTERACTIVE] == "even alone, TPOT 69 ms, above the 50 ms target"
    assert l4.capacity[BATCH] > 0 and BATCH not in l4.capacity_reasons
    cpu = _shape(problem, "qwen2.5-0.5b", "cpu")
    assert cpu.capacity[INTERACTIVE] == 0 and "TTFT" in cpu.capacity_reasons[INTERACTIVE]


def test_observed_sizes_change_the_bucket_a_shape_is_rated_at(
    config: GearshiftConfig, make_fleet_nodes: Callable[..., list[NodeView]]
) -> None:
    nodes = make_fleet_nodes(config)
    before = build_problem(config, nodes, [])
    observed = {"qwen2.5-0.5b": [ClassDemand(STANDARD, 1.0, 3000, 1000)]}
    after = build_problem(config, nodes, [], observed)
    assert [d.classes for d in before.demands if d.model == "qwen2.5-0.5b"] == [()]
    assert [d.classes for d in after.demands if d.model == "qwen2.5-0.5b"] == [
        (ClassDemand(STANDARD, 1.0, 3000, 1000),)
    ]
    old, new = (_shape(p, "qwen2.5-0.5b", "l4") for p in (before, after))
    assert new.capacity[STANDARD] < old.capacity[STANDARD]  # rated at 3072/1024, not 512/128
    assert new.capacity[INTERACTIVE] == old.capacity[INTERACTIVE]


def test_shapes_that_do_not_fit_keep_their_reason_and_no_capacity() -> None:
    config = parse_config(
        """
fleet:
  node_groups:
    - {name: l4, accelerator: L4, nodes: 1}
models:
  - {name: llama-3.1-70b}
"""
    )
    nodes = [NodeView("l4-0", "l4", "L4", 1, 22.0, 0.8, config.fleet.node_groups[0].ownership)]
    (shape,) = build_problem(config, nodes, []).demands[0].shapes
    assert not shape.fits and "weights need" in shape.reason
    assert (shape.capacity, shape.capacity_reasons) == ({}, {})
    assert shape.price_per_hour == config.fleet.node_groups[0].solver_price_per_hour()


# -------------------------------------------------------------------------- solver and knobs


@dataclass
class _Recorder:
    """A solver that remembers the problem it was given and places nothing."""

    TYPE: ClassVar[str] = "recorder"
    name: str = "recorder"
    problems: list[PlacementProblem] = field(default_factory=list)

    def solve(self, problem: PlacementProblem) -> PlacementPlan:
        self.problems.append(problem)
        return PlacementPlan(())


def test_plan_hands_the_replanning_knobs_and_observed_demand_to_the_solver(
    config: GearshiftConfig, make_fleet_nodes: Callable[..., list[NodeView]]
) -> None:
    solver = _Recorder()
    observed = {"qwen2.5-0.5b": [ClassDemand(BATCH, 7.0, 100, 100)]}
    assert plan(solver, config, make_fleet_nodes(config), [], observed) == PlacementPlan(())
    (problem,) = solver.problems
    assert (problem.hysteresis, problem.max_disruptions) == (0.25, 3)
    qwen = next(d for d in problem.demands if d.model == "qwen2.5-0.5b")
    assert qwen.classes == (ClassDemand(BATCH, 7.0, 100, 100),)
    assert qwen.replicas == 1


def test_only_groups_with_nodes_present_get_shapes(
    config: GearshiftConfig, make_fleet_nodes: Callable[..., list[NodeView]]
) -> None:
    nodes = [n for n in make_fleet_nodes(config) if n.group == "l4"]
    problem = build_problem(config, nodes, [])
    assert {s.group for d in problem.demands for s in d.shapes} == {"l4"}
