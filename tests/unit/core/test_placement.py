"""Placement on the real demo fleet: planner + memory-best-fit solver + reconciler.

Nodes are built the way the controller sees them: ``declare_fleet`` declares each configured
node, ``node_view`` reads the declaration back (see ``fleet_nodes`` in conftest).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from scheduler.config import GearshiftConfig, PluginSpec, demo_config_text
from scheduler.framework.placement import NodeView, PlacementPlan, PlacementSolver
from scheduler.framework.plugin import Verdict
from scheduler.placement.actions import StartReplica, StopReplica
from scheduler.placement.planner import plan as make_plan
from scheduler.placement.reconciler import reconcile
from scheduler.plugins import PluginRegistry

FleetNodes = Callable[..., list[NodeView]]


def _config(edit: Callable[[dict[str, Any]], None]) -> GearshiftConfig:
    """The demo config with ``edit`` applied to its YAML data."""
    data = yaml.safe_load(demo_config_text())
    edit(data)
    return GearshiftConfig.model_validate(data)


def _model(data: dict[str, Any], name: str) -> dict[str, Any]:
    model: dict[str, Any] = next(m for m in data["models"] if m["name"] == name)
    return model


@pytest.fixture
def solver(registry: PluginRegistry) -> PlacementSolver:
    """This file pins ``memory-best-fit-solver`` (the cost solvers have their own tests)."""
    spec = PluginSpec(name="solver", type="memory-best-fit-solver")
    built: PlacementSolver = registry.build(spec, PlacementSolver)
    return built


def _assert_no_overcommit(nodes: list[NodeView], plan: PlacementPlan) -> None:
    capacity = {n.node_id: n.accelerator_count for n in nodes if n.alive}
    used: Counter[str] = Counter()
    for a in plan.assignments:
        assert a.node_id in capacity, f"{a.replica_id} on a dead or unknown node"
        used[a.node_id] += a.tensor_parallel
    assert all(used[n] <= capacity[n] for n in used), used


# ------------------------------------------------------------------------------- the demo


def test_demo_fleet_plan(
    solver: PlacementSolver, demo: GearshiftConfig, make_fleet_nodes: FleetNodes
) -> None:
    nodes = make_fleet_nodes(demo)
    plan = make_plan(solver, demo, nodes, [])

    assert plan.unplaced == ()
    per_model = Counter(a.model for a in plan.assignments)
    assert per_model == {m.name: m.replicas for m in demo.models}
    by_node = {n.node_id: n for n in nodes}
    for a in plan.assignments:
        model = demo.model(a.model)
        assert model is not None
        assert a.accelerator in model.accelerators, f"{a.replica_id} breaks the allowlist"
        assert a.accelerator == by_node[a.node_id].accelerator
        assert a.price_per_hour == pytest.approx(by_node[a.node_id].price_per_accelerator_hour)
    _assert_no_overcommit(nodes, plan)
    assert plan.cost_per_hour == pytest.approx(sum(a.price_per_hour for a in plan.assignments))


def test_demo_fleet_puts_llama_on_h100_and_a100_only(
    solver: PlacementSolver, demo: GearshiftConfig, make_fleet_nodes: FleetNodes
) -> None:
    plan = make_plan(solver, demo, make_fleet_nodes(demo), [])
    llama = Counter(a.accelerator for a in plan.assignments if a.model == "llama-3.1-8b")
    qwen = Counter(a.accelerator for a in plan.assignments if a.model == "qwen2.5-0.5b")
    # Three replicas, three 80 GB cards; both types are used (spread across tiers).
    assert llama == {"H100-SXM": 1, "A100-80GB": 2}
    assert qwen == {"L4": 2, "CPU": 1}


def test_demo_plan_is_deterministic_and_stable_on_replan(
    solver: PlacementSolver, demo: GearshiftConfig, make_fleet_nodes: FleetNodes
) -> None:
    nodes = make_fleet_nodes(demo)
    first = make_plan(solver, demo, nodes, [])
    assert make_plan(solver, demo, nodes, []) == first
    assert make_plan(solver, demo, nodes, first.assignments) == first


def _two_h100s(data: dict[str, Any]) -> None:
    data["fleet"]["node_groups"][0].update(nodes=2)
    _model(data, "llama-3.1-8b").update(replicas=2)


@pytest.mark.parametrize(
    ("spread", "expected"),
    [(True, {"H100-SXM": 1, "A100-80GB": 1}), (False, {"H100-SXM": 2})],
)
def test_spread_accelerator_types_puts_a_models_replicas_on_different_tiers(
    registry: PluginRegistry, make_fleet_nodes: FleetNodes, spread: bool, expected: dict[str, int]
) -> None:
    config = _config(_two_h100s)
    assert [g.nodes for g in config.fleet.node_groups if g.name == "h100"] == [2]
    spec = PluginSpec(
        name="solver", type="memory-best-fit-solver",
        params={"spread_accelerator_types": spread},
    )
    solver: PlacementSolver = registry.build(spec, PlacementSolver)
    plan = make_plan(solver, config, make_fleet_nodes(config), [])
    llama = Counter(a.accelerator for a in plan.assignments if a.model == "llama-3.1-8b")
    # The H100 (79.1 GiB) is a hair tighter than the A100 (79.2 GiB): without spreading both
    # replicas take the two H100s; with it the second goes to a type the model lacks.
    assert llama == expected


@pytest.mark.parametrize(
    ("replicas", "expected"),
    [(1, {"L4": 1}), (2, {"L4": 2}), (3, {"L4": 2, "CPU": 1})],
)
def test_cpu_nodes_are_the_fallback_tier(
    solver: PlacementSolver, make_fleet_nodes: FleetNodes, replicas: int,
    expected: dict[str, int],
) -> None:
    # By memory alone the 64 GiB CPU box is a fine home for a 0.5B model (and spreading would
    # send the second replica there); it is used only once every L4 is taken.
    config = _config(lambda d: _model(d, "qwen2.5-0.5b").update(replicas=replicas))
    plan = make_plan(solver, config, make_fleet_nodes(config), [])
    qwen = Counter(a.accelerator for a in plan.assignments if a.model == "qwen2.5-0.5b")
    assert qwen == expected


# ----------------------------------------------------------------------- what cannot be placed


def test_a_70b_bf16_model_on_single_gpu_nodes_is_unresolvable(
    solver: PlacementSolver, make_fleet_nodes: FleetNodes
) -> None:
    config = _config(
        lambda d: d["models"].append({"name": "llama-3.1-70b", "replicas": 1, "dtype": "bfloat16"})
    )
    plan = make_plan(solver, config, make_fleet_nodes(config), [])

    assert [r.subject for r in plan.unplaced] == ["llama-3.1-70b"]
    rejection = plan.unplaced[0]
    assert rejection.verdict is Verdict.UNRESOLVABLE
    assert "fits no accelerator" in rejection.reason
    assert "weights need" in rejection.reason and "GiB per device" in rejection.reason
    assert "llama-3.1-70b" not in {a.model for a in plan.assignments}
    # The rest of the fleet is still planned.
    assert Counter(a.model for a in plan.assignments) == {"llama-3.1-8b": 3, "qwen2.5-0.5b": 3}


def test_more_replicas_than_fitting_nodes_is_unfit(
    solver: PlacementSolver, make_fleet_nodes: FleetNodes
) -> None:
    config = _config(lambda d: _model(d, "llama-3.1-8b").update(replicas=5))
    nodes = make_fleet_nodes(config)
    plan = make_plan(solver, config, nodes, [])

    assert Counter(a.model for a in plan.assignments)["llama-3.1-8b"] == 3
    assert len(plan.unplaced) == 1
    rejection = plan.unplaced[0]
    assert (rejection.subject, rejection.verdict) == ("llama-3.1-8b", Verdict.UNFIT)
    assert "full" in rejection.reason and "a100" in rejection.reason and "h100" in rejection.reason
    _assert_no_overcommit(nodes, plan)


def test_a_model_whose_allowlist_matches_no_node_is_unresolvable(
    solver: PlacementSolver, make_fleet_nodes: FleetNodes
) -> None:
    config = _config(
        lambda d: d["models"].append({"name": "qwen2.5-7b", "accelerators": ["H200"]})
    )
    plan = make_plan(solver, config, make_fleet_nodes(config), [])
    assert [(r.subject, r.verdict) for r in plan.unplaced] == [
        ("qwen2.5-7b", Verdict.UNRESOLVABLE)
    ]


# --------------------------------------------------------------------------- node failures


def test_a_dead_nodes_replica_is_placed_elsewhere(
    solver: PlacementSolver, make_fleet_nodes: FleetNodes
) -> None:
    config = _config(lambda d: _model(d, "llama-3.1-8b").update(replicas=2))
    before = make_plan(solver, config, make_fleet_nodes(config), [])
    llama_before = {a.node_id: a for a in before.assignments if a.model == "llama-3.1-8b"}
    assert len(llama_before) == 2
    victim = sorted(llama_before)[0]
    survivor = llama_before[sorted(llama_before)[1]]

    nodes = make_fleet_nodes(config, dead=[victim])
    after = make_plan(solver, config, nodes, before.assignments)

    llama_after = {a.node_id: a for a in after.assignments if a.model == "llama-3.1-8b"}
    assert len(llama_after) == 2 and victim not in llama_after
    assert llama_after[survivor.node_id] == survivor, "the healthy replica must not move"
    assert after.unplaced == ()
    _assert_no_overcommit(nodes, after)
    # Unrelated replicas stay exactly where they were.
    others = {a for a in before.assignments if a.model != "llama-3.1-8b"}
    assert others <= set(after.assignments)

    actions = reconcile(after, [a.replica_id for a in before.assignments])
    replaced = next(a for a in after.assignments if a.node_id not in llama_before
                    and a.model == "llama-3.1-8b")
    assert actions == [
        StartReplica(replaced),
        StopReplica(llama_before[victim].replica_id, "no longer in the plan"),
    ]


def test_a_node_that_left_the_inventory_is_treated_like_a_dead_one(
    solver: PlacementSolver, demo: GearshiftConfig, make_fleet_nodes: FleetNodes
) -> None:
    before = make_plan(solver, demo, make_fleet_nodes(demo), [])
    remaining = [n for n in make_fleet_nodes(demo) if n.node_id != "l4-0"]
    after = make_plan(solver, demo, remaining, before.assignments)
    assert "l4-0" not in {a.node_id for a in after.assignments}
    # qwen had exactly three homes (l4-0, l4-1, cpu-0): one replica now cannot be placed.
    assert [(r.subject, r.verdict) for r in after.unplaced] == [("qwen2.5-0.5b", Verdict.UNFIT)]


def test_narrowing_a_models_accelerators_moves_its_replicas(
    solver: PlacementSolver, demo: GearshiftConfig, make_fleet_nodes: FleetNodes
) -> None:
    running = make_plan(solver, demo, make_fleet_nodes(demo), []).assignments
    narrowed = _config(
        lambda d: _model(d, "llama-3.1-8b").update(replicas=1, accelerators=["H100-SXM"])
    )
    plan = make_plan(solver, narrowed, make_fleet_nodes(narrowed), running)
    llama = [a for a in plan.assignments if a.model == "llama-3.1-8b"]
    assert [a.accelerator for a in llama] == ["H100-SXM"]


# ------------------------------------------------------------------------------- reconcile


def test_reconcile_starts_missing_and_stops_unplanned(
    solver: PlacementSolver, demo: GearshiftConfig, make_fleet_nodes: FleetNodes
) -> None:
    plan = make_plan(solver, demo, make_fleet_nodes(demo), [])
    ids = [a.replica_id for a in plan.assignments]
    running = [ids[0], ids[2], "zombie.b", "zombie.a"]

    actions = reconcile(plan, running)

    starts = [a for a in actions if isinstance(a, StartReplica)]
    stops = [a for a in actions if isinstance(a, StopReplica)]
    assert actions == starts + stops, "starts come before stops"
    assert [s.assignment for s in starts] == [
        a for a in plan.assignments if a.replica_id not in running
    ]
    assert [s.replica_id for s in stops] == ["zombie.a", "zombie.b"]
    assert all(s.reason for s in stops)


def test_reconcile_from_nothing_starts_the_whole_plan(
    solver: PlacementSolver, demo: GearshiftConfig, make_fleet_nodes: FleetNodes
) -> None:
    plan = make_plan(solver, demo, make_fleet_nodes(demo), [])
    assert reconcile(plan, []) == [StartReplica(a) for a in plan.assignments]
    assert reconcile(PlacementPlan(()), ["a", "b"]) == [
        StopReplica("a", "no longer in the plan"),
        StopReplica("b", "no longer in the plan"),
    ]


def test_reconcile_is_idempotent(
    solver: PlacementSolver, demo: GearshiftConfig, make_fleet_nodes: FleetNodes
) -> None:
    plan = make_plan(solver, demo, make_fleet_nodes(demo), [])
    running = [plan.assignments[1].replica_id, "old.replica"]
    first = reconcile(plan, running)
    assert reconcile(plan, list(running)) == first
    assert reconcile(plan, iter(reversed(running))) == first  # order of `actual` is irrelevant

    # Apply the actions: the world now matches the plan, so there is nothing left to do.
    world = set(running)
    for action in first:
        if isinstance(action, StartReplica):
            world.add(action.assignment.replica_id)
        else:
            world.discard(action.replica_id)
    assert world == {a.replica_id for a in plan.assignments}
    assert reconcile(plan, world) == []


def test_reconcile_after_a_dead_node_then_replan_converges(
    solver: PlacementSolver, demo: GearshiftConfig, make_fleet_nodes: FleetNodes
) -> None:
    # A full controller round twice over: plan → reconcile → apply → plan again → no actions.
    nodes = [dataclasses.replace(n, alive=n.node_id != "a100-0") for n in make_fleet_nodes(demo)]
    current: list[Any] = []
    running: set[str] = set()
    for _ in range(2):
        plan = make_plan(solver, demo, nodes, current)
        for action in reconcile(plan, running):
            if isinstance(action, StartReplica):
                running.add(action.assignment.replica_id)
            else:
                running.discard(action.replica_id)
        current = list(plan.assignments)
    assert reconcile(make_plan(solver, demo, nodes, current), running) == []
    assert not any(rid.endswith(".a100-0.0") for rid in running)
