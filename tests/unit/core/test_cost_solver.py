"""The cost solvers (``cost-milp-solver`` and its fallback ``cost-greedy-solver``) on
hand-built placement problems: which cards win, floors, TP packing, reasons for what is left
out, hysteresis and the disruption budget, the fallback path, determinism.

Prices are dollars per accelerator-hour; capacities req/s per replica. Each case states the
arithmetic that makes its expected plan the cheapest.
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from collections.abc import Callable, Mapping
from types import SimpleNamespace
from typing import Any

import pytest
from scipy.optimize import milp as real_milp

from scheduler.framework.placement import (
    ClassDemand,
    ModelDemand,
    NodeView,
    PlacementPlan,
    PlacementProblem,
    PlacementSolver,
    ReplicaAssignment,
    ReplicaShape,
)
from scheduler.framework.plugin import Verdict
from scheduler.types import Ownership, TrafficClass

INTER, STD, B = TrafficClass.INTERACTIVE, TrafficClass.STANDARD, TrafficClass.BATCH
MILP, GREEDY = "cost-milp-solver", "cost-greedy-solver"
BOTH = [MILP, GREEDY]
PRICE = {"H100-SXM": 3.0, "A100-80GB": 2.0, "L4": 0.8, "T4": 0.35, "CPU": 0.2}
MakeSolver = Callable[..., PlacementSolver]


@pytest.fixture
def make_solver(make_plugin: Callable[..., Any]) -> MakeSolver:
    def make(type_name: str = MILP, **params: Any) -> PlacementSolver:
        solver: PlacementSolver = make_plugin(type_name, PlacementSolver, **params)
        return solver

    return make


def group(
    name: str,
    accelerator: str,
    nodes: int,
    per_node: int = 1,
    *,
    ownership: Ownership = Ownership.ON_DEMAND,
    dead: int = 0,
) -> tuple[NodeView, ...]:
    """``nodes`` nodes of ``per_node`` accelerators, the last ``dead`` of them not alive."""
    return tuple(
        NodeView(
            node_id=f"{name}-{i}",
            group=name,
            accelerator=accelerator,
            accelerator_count=per_node,
            accelerator_memory_gib=80.0,
            price_per_hour=PRICE[accelerator] * per_node,
            ownership=ownership,
            alive=i < nodes - dead,
        )
        for i in range(nodes)
    )


def shape(
    model: str,
    group_name: str,
    accelerator: str,
    capacity: Mapping[TrafficClass, float],
    *,
    tp: int = 1,
    price: float | None = None,
    fits: bool = True,
    reason: str = "",
    capacity_reasons: Mapping[TrafficClass, str] | None = None,
    speed: float = 50.0,
) -> ReplicaShape:
    return ReplicaShape(
        model=model,
        group=group_name,
        accelerator=accelerator,
        tensor_parallel=tp,
        memory_per_device_gib=20.0,
        fits=fits,
        reason=reason,
        decode_tokens_per_s=speed,
        on_cpu=accelerator == "CPU",
        price_per_hour=PRICE[accelerator] * tp if price is None else price,
        capacity=dict(capacity),
        capacity_reasons=dict(capacity_reasons or {}),
    )


def demand(model: str, floor: int, shapes: tuple[ReplicaShape, ...], **rates: float) -> ModelDemand:
    classes = tuple(ClassDemand(TrafficClass(c), r, 512, 128) for c, r in rates.items())
    return ModelDemand(model, floor, shapes, classes)


def accelerators(plan: PlacementPlan, model: str | None = None) -> Counter[str]:
    return Counter(a.accelerator for a in plan.assignments if model in (None, a.model))


def share(plan: PlacementPlan, model: str, traffic_class: TrafficClass) -> float:
    return next(
        c.share for c in plan.coverage if (c.model, c.traffic_class) == (model, traffic_class)
    )


def assert_valid(problem: PlacementProblem, plan: PlacementPlan) -> None:
    """No node over-committed or dead, ids unique, every replica on a fitting shape, prices
    the node's own."""
    nodes = {n.node_id: n for n in problem.nodes}
    used: Counter[str] = Counter()
    assert len({a.replica_id for a in plan.assignments}) == len(plan.assignments)
    for a in plan.assignments:
        node = nodes[a.node_id]
        assert node.alive
        shapes = next(d.shapes for d in problem.demands if d.model == a.model)
        assert any(
            s.fits and s.group == node.group and s.tensor_parallel == a.tensor_parallel
            for s in shapes
        ), a
        used[a.node_id] += a.tensor_parallel
        if a.accelerator == "CPU":
            assert a.price_per_hour == pytest.approx(node.price_per_hour)
        else:
            assert a.price_per_hour == pytest.approx(
                node.price_per_accelerator_hour * a.tensor_parallel
            )
    for node_id, count in used.items():
        limit = 1 if nodes[node_id].accelerator == "CPU" else nodes[node_id].accelerator_count
        assert count <= limit, node_id


# ---------------------------------------------------------------------- which cards win

L4_FLEET = group("l4", "L4", 4) + group("h100", "H100-SXM", 1, 8)


def _cheap_card_wins() -> PlacementProblem:
    # Batch 10 req/s: two L4 (5 req/s each) cost 1.6 $/h, one H100 (20 req/s) 3.0 $/h.
    shapes = (
        shape("m", "l4", "L4", {B: 5}),
        shape("m", "h100", "H100-SXM", {B: 20}, speed=150),
    )
    return PlacementProblem(L4_FLEET, (demand("m", 0, shapes, batch=10),))


def _interactive_needs_the_fast_card() -> PlacementProblem:
    # L4 misses the interactive TPOT target; interactive 8 req/s fills one H100 (3 $/h).
    # Batch 16 req/s: two L4 (8 each, 1.6 $/h) beat a second H100 (3 $/h).
    shapes = (
        shape("m", "l4", "L4", {INTER: 0, B: 8}, capacity_reasons={INTER: "TPOT misses"}),
        shape("m", "h100", "H100-SXM", {INTER: 8, B: 20}, speed=150),
    )
    return PlacementProblem(L4_FLEET, (demand("m", 0, shapes, interactive=8, batch=16),))


def _floor_without_demand() -> PlacementProblem:
    shapes = (shape("m", "l4", "L4", {}), shape("m", "h100", "H100-SXM", {}))
    return PlacementProblem(L4_FLEET, (demand("m", 3, shapes),))


def _floor_above_demand() -> PlacementProblem:
    # 1 req/s needs one L4, but the floor asks for three.
    shapes = (shape("m", "l4", "L4", {B: 5}), shape("m", "h100", "H100-SXM", {B: 20}))
    return PlacementProblem(L4_FLEET, (demand("m", 3, shapes, batch=1),))


def _unfit_shape_is_never_used() -> PlacementProblem:
    # The T4 shape would be the cheapest by far, but it does not fit.
    shapes = (
        shape("m", "t4", "T4", {B: 50}, fits=False, reason="weights need 30.0 GiB per device"),
        shape("m", "l4", "L4", {B: 5}),
    )
    fleet = L4_FLEET + group("t4", "T4", 4)
    return PlacementProblem(fleet, (demand("m", 1, shapes, batch=10),))


def _dead_and_cpu_nodes() -> PlacementProblem:
    # Two of the four L4 nodes are dead; the CPU node counts as one slot whatever its count.
    nodes = group("l4", "L4", 4, dead=2) + (
        dataclasses.replace(group("cpu", "CPU", 1)[0], accelerator_count=4),
    )
    shapes = (shape("m", "l4", "L4", {}), shape("m", "cpu", "CPU", {}))
    return PlacementProblem(nodes, (demand("m", 3, shapes),))


CASES: list[tuple[str, Callable[[], PlacementProblem], dict[str, int]]] = [
    ("cheapest card that meets the SLO", _cheap_card_wins, {"L4": 2}),
    ("interactive on the fast card", _interactive_needs_the_fast_card, {"H100-SXM": 1, "L4": 2}),
    ("floor without demand", _floor_without_demand, {"L4": 3}),
    ("floor above demand", _floor_above_demand, {"L4": 3}),
    ("unfit shapes never used", _unfit_shape_is_never_used, {"L4": 2}),
    ("dead nodes unused, one replica per CPU node", _dead_and_cpu_nodes, {"L4": 2, "CPU": 1}),
]


@pytest.mark.parametrize("solver_type", BOTH)
@pytest.mark.parametrize(("build", "expected"), [pytest.param(b, e, id=n) for n, b, e in CASES])
def test_cards_chosen(
    make_solver: MakeSolver,
    solver_type: str,
    build: Callable[[], PlacementProblem],
    expected: dict[str, int],
) -> None:
    problem = build()
    plan = make_solver(solver_type).solve(problem)
    assert_valid(problem, plan)
    assert accelerators(plan) == expected
    assert plan.unplaced == ()
    assert all(c.share == pytest.approx(1.0) for c in plan.coverage)


def test_interactive_demand_is_routed_to_the_fast_card(make_solver: MakeSolver) -> None:
    plan = make_solver().solve(_interactive_needs_the_fast_card())
    assert [(c.traffic_class, c.demand_per_s, c.served_per_s) for c in plan.coverage] == [
        (INTER, 8, pytest.approx(8)),
        (B, 16, pytest.approx(16)),
    ]
    assert plan.cost_per_hour == pytest.approx(3.0 + 2 * 0.8)
    assert plan.notes == ("optimal (proven within 0.01% of the optimum by HiGHS)",)


def test_a_hand_computed_optimum(make_solver: MakeSolver) -> None:
    # Card A: 1 $/h, no interactive (TPOT), batch 10 req/s. Card B: 4 $/h, interactive
    # 6 req/s, batch 30 req/s. Demand: interactive 9, batch 25.
    # Interactive needs B: 9/6 = 1.5 replicas → 2 B (8 $/h), half of the second one idle.
    # That half serves 0.5 × 30 = 15 batch req/s; the other 10 need one A (1 $/h) rather than
    # a third B (4 $/h). 2 B + 0 A serves only 15 batch. Optimum: x_A = 1, x_B = 2, 9 $/h.
    nodes = group("a", "L4", 4) + group("b", "H100-SXM", 4)
    shapes = (
        shape("m", "a", "L4", {INTER: 0, B: 10}, price=1.0),
        shape("m", "b", "H100-SXM", {INTER: 6, B: 30}, price=4.0),
    )
    problem = PlacementProblem(nodes, (demand("m", 0, shapes, interactive=9, batch=25),))

    plan = make_solver().solve(problem)

    assert accelerators(plan) == {"L4": 1, "H100-SXM": 2}
    # The plan reports the nodes' real prices: 0.8 $/h per L4, 3 $/h per H100.
    assert plan.cost_per_hour == pytest.approx(0.8 + 2 * 3.0)
    assert share(plan, "m", INTER) == share(plan, "m", B) == pytest.approx(1.0)


def test_tensor_parallel_replicas_are_packed_onto_whole_nodes(make_solver: MakeSolver) -> None:
    # 2 nodes × 8 A100: three TP4 replicas of `big` and four TP1 of `small` fill all 16.
    # First-fit decreasing: TP4s on a100-0, a100-0, a100-1; the TP1s fill a100-1.
    nodes = group("a100", "A100-80GB", 2, 8)
    big = (
        shape("big", "a100", "A100-80GB", {}, tp=1, fits=False, reason="weights need 140 GiB"),
        shape("big", "a100", "A100-80GB", {}, tp=4),
    )
    small = (shape("small", "a100", "A100-80GB", {}),)
    problem = PlacementProblem(nodes, (demand("big", 3, big), demand("small", 4, small)))

    for solver_type in BOTH:
        plan = make_solver(solver_type).solve(problem)
        assert_valid(problem, plan)
        assert plan.unplaced == ()
        layout = Counter((a.model, a.node_id, a.tensor_parallel) for a in plan.assignments)
        assert layout == {
            ("big", "a100-0", 4): 2,
            ("big", "a100-1", 4): 1,
            ("small", "a100-1", 1): 4,
        }


# --------------------------------------------------------------------- what is left out


def test_exhausted_hardware_names_the_shortfall(make_solver: MakeSolver) -> None:
    # One node of 2 H100: 2 replicas × 8 req/s serve 16 of 40 interactive req/s; the other 24
    # need 3 more replicas. The floor of 5 misses 3 replicas.
    nodes = group("h100", "H100-SXM", 1, 2)
    shapes = (shape("m", "h100", "H100-SXM", {INTER: 8}),)
    problem = PlacementProblem(nodes, (demand("m", 5, shapes, interactive=40),))

    for solver_type in BOTH:
        plan = make_solver(solver_type).solve(problem)
        assert len(plan.assignments) == 2
        floor, served = plan.unplaced
        assert (floor.subject, floor.verdict, floor.code) == (
            "m",
            Verdict.UNFIT,
            "accelerators_exhausted",
        )
        assert "3 of 5 replicas unplaced" in floor.reason
        assert "3 more H100-SXM accelerators" in floor.reason
        assert "h100 0 of 2" in floor.reason
        assert (served.verdict, served.code) == (Verdict.UNFIT, "accelerators_exhausted")
        assert "24 of 40 req/s of interactive demand unserved" in served.reason
        assert "about 3 more H100-SXM" in served.reason
        assert share(plan, "m", INTER) == pytest.approx(16 / 40)


def test_a_class_no_shape_can_serve_is_unresolvable_with_the_shapes_reasons(
    make_solver: MakeSolver,
) -> None:
    nodes = group("l4", "L4", 2) + group("t4", "T4", 2)
    shapes = (
        shape(
            "m",
            "l4",
            "L4",
            {INTER: 0, B: 5},
            capacity_reasons={INTER: "TPOT at batch 1 is 61 ms, the target 50 ms"},
        ),
        shape("m", "t4", "T4", {}, fits=False, reason="weights need 30.0 GiB per device"),
    )
    problem = PlacementProblem(nodes, (demand("m", 0, shapes, interactive=3, batch=5),))

    for solver_type in BOTH:
        plan = make_solver(solver_type).solve(problem)
        (rejection,) = plan.unplaced
        assert (rejection.verdict, rejection.code) == (
            Verdict.UNRESOLVABLE,
            "no_shape_meets_targets",
        )
        assert "no shape meets the interactive targets" in rejection.reason
        assert "L4 TP1 on l4: TPOT at batch 1 is 61 ms, the target 50 ms" in rejection.reason
        assert "T4 TP1 on t4: does not fit (weights need 30.0 GiB per device)" in rejection.reason
        assert share(plan, "m", B) == pytest.approx(1.0)
        assert share(plan, "m", INTER) == 0.0


def test_a_model_that_fits_nowhere_is_unresolvable(make_solver: MakeSolver) -> None:
    shapes = (shape("m", "l4", "L4", {B: 5}, fits=False, reason="weights need 140.0 GiB"),)
    problem = PlacementProblem(L4_FLEET, (demand("m", 1, shapes, batch=1),))
    plan = make_solver().solve(problem)
    assert plan.assignments == ()
    floor, served = plan.unplaced
    assert floor.verdict is Verdict.UNRESOLVABLE
    assert "fits no accelerator in the fleet" in floor.reason
    assert "weights need 140.0 GiB" in floor.reason
    assert served.verdict is Verdict.UNRESOLVABLE


# --------------------------------------------------------------- hysteresis and disruptions


def _two_cards(price_y: float) -> tuple[tuple[NodeView, ...], ModelDemand]:
    nodes = group("x", "L4", 4) + group("y", "A100-80GB", 4)
    shapes = (
        shape("m", "x", "L4", {B: 10}, price=1.0),
        shape("m", "y", "A100-80GB", {B: 10}, price=price_y),
    )
    return nodes, demand("m", 1, shapes, batch=5)


def _running_on_y(count: int = 1) -> tuple[ReplicaAssignment, ...]:
    return tuple(
        ReplicaAssignment(f"m.y-{i}.0", "m", f"y-{i}", "A100-80GB", 1, 2.0) for i in range(count)
    )


@pytest.mark.parametrize("solver_type", BOTH)
@pytest.mark.parametrize(
    ("price_y", "kept"),
    [
        # Keeping Y costs 1.05; replacing it costs 1.00 × (1 + 0.1) = 1.10: keep.
        (1.05, True),
        # Keeping Y costs 2.00; replacing it costs 1.10: replace.
        (2.0, False),
    ],
)
def test_hysteresis_keeps_a_slightly_dearer_plan_only(
    make_solver: MakeSolver, solver_type: str, price_y: float, kept: bool
) -> None:
    nodes, wanted = _two_cards(price_y)
    problem = PlacementProblem(nodes, (wanted,), _running_on_y(), hysteresis=0.1)
    plan = make_solver(solver_type).solve(problem)
    assert len(plan.assignments) == 1
    assert (plan.assignments[0].replica_id == "m.y-0.0") is kept
    assert plan.assignments[0].accelerator == ("A100-80GB" if kept else "L4")


@pytest.mark.parametrize("solver_type", BOTH)
@pytest.mark.parametrize(("budget", "dropped"), [(None, 4), (0, 0), (1, 1), (3, 3)])
def test_disruption_budget_bounds_the_running_replicas_dropped(
    make_solver: MakeSolver, solver_type: str, budget: int | None, dropped: int
) -> None:
    # Four replicas run on Y (2 $/h); X (1 $/h) is cheaper: without a budget all four move.
    nodes, wanted = _two_cards(2.0)
    wanted = dataclasses.replace(wanted, replicas=4)
    running = _running_on_y(4)
    problem = PlacementProblem(nodes, (wanted,), running, max_disruptions=budget)

    plan = make_solver(solver_type).solve(problem)

    assert_valid(problem, plan)
    ids = {a.replica_id for a in plan.assignments}
    assert len(ids) == 4
    assert sum(r.replica_id not in ids for r in running) == dropped


def test_a_fragmented_group_moves_a_running_replica_within_the_budget(
    make_solver: MakeSolver,
) -> None:
    # Two 8-GPU nodes each run one TP1 replica of `a`; `b` needs a whole node (TP8). The
    # totals fit (2 + 8 <= 16) but no node has 8 free until one `a` replica moves.
    nodes = group("h100", "H100-SXM", 2, 8)
    running = tuple(
        ReplicaAssignment(f"a.h100-{i}.0", "a", f"h100-{i}", "H100-SXM", 1, 3.0) for i in (0, 1)
    )
    demands = (
        demand("a", 2, (shape("a", "h100", "H100-SXM", {}),)),
        demand("b", 1, (shape("b", "h100", "H100-SXM", {}, tp=8),)),
    )
    moved = make_solver().solve(PlacementProblem(nodes, demands, running))
    assert moved.unplaced == ()
    assert Counter(a.model for a in moved.assignments) == {"a": 2, "b": 1}
    assert "1 running replica moves to another node to make room" in moved.notes

    stuck = make_solver().solve(PlacementProblem(nodes, demands, running, max_disruptions=0))
    assert set(running) <= set(stuck.assignments)
    (rejection,) = stuck.unplaced
    assert (rejection.subject, rejection.code) == ("b", "fragmented")
    assert "found no node with 8 free accelerators together" in rejection.reason


def test_spot_replicas_are_flagged_in_the_notes(make_solver: MakeSolver) -> None:
    nodes = group("l4", "L4", 3, ownership=Ownership.SPOT)
    problem = PlacementProblem(nodes, (demand("m", 3, (shape("m", "l4", "L4", {}),)),))
    plan = make_solver().solve(problem)
    assert "3 replicas on spot capacity (interruptible)" in plan.notes


# --------------------------------------------------------------------- greedy and fallback


def _random_problem(seed: int, models: int = 4) -> PlacementProblem:
    """A mixed fleet with random capacities, prices and demand (seeded)."""
    rng = random.Random(seed)
    cards = [("h100", "H100-SXM", 8, 6.0), ("a100", "A100-80GB", 4, 4.0), ("l4", "L4", 1, 1.5)]
    nodes = tuple(n for name, accel, per_node, _ in cards for n in group(name, accel, 3, per_node))
    demands = []
    for m in range(models):
        shapes = tuple(
            shape(
                f"m{m}",
                name,
                accel,
                {
                    INTER: speed * rng.uniform(0, 1.2),
                    STD: speed * rng.uniform(0.5, 1.5),
                    B: 2 * speed,
                },
                speed=speed,
            )
            for name, accel, _, speed in cards
        )
        rates = {c.value: rng.choice([0.0, rng.uniform(1, 20)]) for c in (INTER, STD, B)}
        demands.append(demand(f"m{m}", rng.randint(0, 2), shapes, **rates))
    return PlacementProblem(nodes, tuple(demands))


@pytest.mark.parametrize("seed", range(8))
def test_greedy_is_valid_and_within_a_factor_of_the_optimum(
    make_solver: MakeSolver, seed: int
) -> None:
    problem = _random_problem(seed)
    best = make_solver(MILP).solve(problem)
    quick = make_solver(GREEDY).solve(problem)
    assert_valid(problem, quick)
    assert quick.notes[0] == "greedy (cost-greedy-solver)"
    # Same feasibility: whatever demand the MIP serves, greedy serves too on these fleets.
    assert {c.model: c.share for c in quick.coverage if c.share < 1} == {
        c.model: c.share for c in best.coverage if c.share < 1
    }
    assert best.cost_per_hour <= quick.cost_per_hour + 1e-9
    assert quick.cost_per_hour <= 1.5 * best.cost_per_hour


def test_greedy_decides_class_by_class_and_pays_for_it(make_solver: MakeSolver) -> None:
    # Card A: 1 $/h, 5 req/s of either class. Card B: 1.5 $/h, interactive 6, batch 30.
    # Demand: interactive 5, batch 5. Greedy takes A for interactive (1/5 < 1.5/5 per req/s)
    # and again for batch: 2 $/h. The MIP sees that one B covers both: interactive takes 5/6 of
    # its time, the remaining 1/6 serves 30/6 = 5 batch req/s: 1.5 $/h (greedy: 1.33×).
    nodes = group("a", "L4", 2) + group("b", "H100-SXM", 2)
    shapes = (
        shape("m", "a", "L4", {INTER: 5, B: 5}, price=1.0),
        shape("m", "b", "H100-SXM", {INTER: 6, B: 30}, price=1.5),
    )
    problem = PlacementProblem(nodes, (demand("m", 0, shapes, interactive=5, batch=5),))
    best = make_solver(MILP).solve(problem)
    quick = make_solver(GREEDY).solve(problem)
    assert accelerators(best) == {"H100-SXM": 1}
    assert accelerators(quick) == {"L4": 2}
    assert all(c.share == pytest.approx(1.0) for c in (*best.coverage, *quick.coverage))


def _failing_milp(*args: Any, **kwargs: Any) -> Any:
    raise ValueError("simulated HiGHS failure")


def _no_incumbent(*args: Any, **kwargs: Any) -> Any:
    return SimpleNamespace(x=None, status=1, message="Time limit reached")


def _stopped_early(*args: Any, **kwargs: Any) -> Any:
    # HiGHS hit its limit on every solve: the relaxation's value is no bound, and the MIP
    # claims a bound 25 % under its plan.
    result = real_milp(*args, **kwargs)
    return SimpleNamespace(
        x=result.x, status=1, fun=result.fun, mip_dual_bound=0.75 * result.fun, message=""
    )


@pytest.mark.parametrize(
    ("fake", "note"),
    [
        (_failing_milp, "greedy fallback: HiGHS failed (simulated HiGHS failure)"),
        (_no_incumbent, "greedy fallback: HiGHS found no plan within 0.5 s"),
    ],
)
def test_when_highs_finds_no_plan_the_greedy_plan_is_used(
    make_solver: MakeSolver, monkeypatch: pytest.MonkeyPatch, fake: Any, note: str
) -> None:
    problem = _random_problem(3)
    monkeypatch.setattr("policies.placement.cost_milp.milp", fake)
    plan = make_solver(MILP, time_limit_s=0.5).solve(problem)
    assert_valid(problem, plan)
    assert plan.notes[0] == note
    greedy = make_solver(GREEDY).solve(problem)
    assert plan.assignments == greedy.assignments and plan.unplaced == greedy.unplaced


def _relaxation_only(*args: Any, **kwargs: Any) -> Any:
    if any(kwargs["integrality"]):
        raise ValueError("simulated MIP failure")
    return real_milp(*args, **kwargs)


def test_when_only_the_mip_fails_the_best_incumbent_is_used_with_its_margin(
    make_solver: MakeSolver, monkeypatch: pytest.MonkeyPatch
) -> None:
    problem = _random_problem(5)
    monkeypatch.setattr("policies.placement.cost_milp.milp", _relaxation_only)
    plan = make_solver(MILP).solve(problem)
    assert_valid(problem, plan)
    assert all(c.share == pytest.approx(1.0) for c in plan.coverage)
    (how,) = (n for n in plan.notes if "above the optimum" in n)
    assert how.startswith(("LP rounding plan, at most ", "greedy plan, at most "))
    assert how.endswith("above the optimum (HiGHS MIP failed (simulated MIP failure))")
    assert plan.cost_per_hour <= make_solver(GREEDY).solve(problem).cost_per_hour + 1e-9


def test_keep_current_fallback_keeps_what_runs_and_adds_nothing(
    make_solver: MakeSolver, monkeypatch: pytest.MonkeyPatch
) -> None:
    nodes, wanted = _two_cards(2.0)
    problem = PlacementProblem(nodes, (dataclasses.replace(wanted, replicas=3),), _running_on_y(2))
    monkeypatch.setattr("policies.placement.cost_milp.milp", _failing_milp)
    plan = make_solver(MILP, fallback="keep-current").solve(problem)
    assert {a.replica_id for a in plan.assignments} == {"m.y-0.0", "m.y-1.0"}
    assert plan.notes[0].startswith("keep-current fallback: HiGHS failed")
    assert "1 of 3 replicas unplaced" in plan.unplaced[0].reason


def test_a_time_limited_solution_is_used_and_its_gap_noted(
    make_solver: MakeSolver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("policies.placement.cost_milp.milp", _stopped_early)
    plan = make_solver(MILP, time_limit_s=2).solve(_cheap_card_wins())
    assert accelerators(plan) == {"L4": 2}
    assert plan.notes == (
        "HiGHS MIP plan, at most 25.00% above the optimum (HiGHS MIP stopped at its 2 s limit)",
    )


def test_demand_beyond_the_fleet_gets_the_cheapest_plan_at_the_best_service(
    make_solver: MakeSolver,
) -> None:
    # 2 L4 (0.8 $/h) and 1 H100 node (8 × 3 $/h): batch 100 req/s is more than all of it
    # serves (2 × 5 + 8 × 10 = 90). Every accelerator is used; 10 req/s stay unserved.
    nodes = group("l4", "L4", 2) + group("h100", "H100-SXM", 1, 8)
    shapes = (shape("m", "l4", "L4", {B: 5}), shape("m", "h100", "H100-SXM", {B: 10}))
    problem = PlacementProblem(nodes, (demand("m", 0, shapes, batch=100),))
    plan = make_solver().solve(problem)
    assert accelerators(plan) == {"L4": 2, "H100-SXM": 8}
    assert share(plan, "m", B) == pytest.approx(0.9)
    assert plan.notes == (
        "demand exceeds the fleet; serving the most it can: optimal (proven within 0.01% of the "
        "optimum by HiGHS); cheapest at that service: HiGHS proved optimal",
    )


@pytest.mark.parametrize("solver_type", BOTH)
def test_same_problem_same_plan(make_solver: MakeSolver, solver_type: str) -> None:
    problem = _random_problem(11, models=8)
    first = make_solver(solver_type).solve(problem)
    assert make_solver(solver_type).solve(problem) == first
    replanned = make_solver(solver_type).solve(
        dataclasses.replace(problem, current=first.assignments)
    )
    assert replanned.assignments == first.assignments
