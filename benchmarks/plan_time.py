"""How long the cost solvers take to plan a large mixed fleet, and what the greedy heuristic
costs against the MIP's optimum.

    python benchmarks/plan_time.py [--sizes 1000,10000] [--models 20] [--repeat 3] [--seed 0]

Each instance: about 50 node groups (H100, A100, L40S, L4, T4; 8-GPU and 1-GPU nodes, some
owned at a marginal price, some spot) holding ``size`` accelerators, ``--models`` models of
0.5B to 72B parameters (bf16 and fp8), three traffic classes each with demand that fills about
half the fleet, a floor of 1 or 2 replicas per model. The time is one ``solve`` call (building
the aggregated model, HiGHS or the heuristic, packing replicas onto nodes), median of
``--repeat``. Costs are the plans' real node prices per hour.

Capacities (req/s per replica and class) come from the real planner when
``scheduler.placement.planner.build_problem`` fills ``ReplicaShape.capacity`` for a config with
a ``workload:`` section; otherwise from a synthetic model proportional to each card's memory
bandwidth (decode tokens/s at batch 1 = bandwidth × TP / weight bytes). The output says which.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import statistics
import time
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from nodes.accelerators import accelerator
from policies.placement.cost_greedy import CostGreedyParams, CostGreedySolver
from policies.placement.cost_milp import CostMilpParams, CostMilpSolver
from scheduler.framework.placement import (
    ClassDemand,
    ModelDemand,
    NodeView,
    PlacementPlan,
    PlacementProblem,
    ReplicaShape,
)
from scheduler.types import Ownership, TrafficClass

CARDS = (
    ("H100-SXM", 8),
    ("A100-80GB", 8),
    ("L40S", 8),
    ("L4", 8),
    ("L4", 1),
    ("T4", 1),
    ("A100-80GB", 1),
)
GROUPS = 50
MODELS = (  # (catalog name, billions of parameters, bytes per parameter)
    ("qwen2.5-0.5b", 0.5, 2),
    ("llama-3.2-1b", 1.2, 2),
    ("qwen2.5-1.5b", 1.5, 2),
    ("llama-3.2-3b", 3.2, 2),
    ("qwen2.5-7b", 7.6, 2),
    ("llama-3.1-8b", 8.0, 2),
    ("mistral-7b", 7.2, 2),
    ("llama-2-13b", 13.0, 2),
    ("llama-3.1-70b", 70.6, 2),
    ("qwen2.5-72b", 72.7, 2),
    ("llama-3.1-8b", 8.0, 1),
    ("llama-3.1-70b", 70.6, 1),
)
OUTPUT_TOKENS = {TrafficClass.INTERACTIVE: 128, TrafficClass.STANDARD: 256, TrafficClass.BATCH: 512}
BATCH = {TrafficClass.INTERACTIVE: 8, TrafficClass.STANDARD: 32, TrafficClass.BATCH: 128}
"""Concurrent sequences a replica runs per class in the synthetic model (latency classes keep
batches small so TPOT stays within target)."""
TPOT_S = {TrafficClass.INTERACTIVE: 0.05, TrafficClass.STANDARD: 0.1}
UTILISATION = 0.5


def fleet(size: int, rng: random.Random) -> tuple[NodeView, ...]:
    """``size`` accelerators (give or take one node) in ``GROUPS`` groups: every group gets its
    share in whole nodes, then groups take one more node each in turn until the fleet is full."""
    counts = [max(1, (size // GROUPS) // CARDS[g % len(CARDS)][1]) for g in range(GROUPS)]
    g = 0
    while sum(c * CARDS[i % len(CARDS)][1] for i, c in enumerate(counts)) < size:
        counts[g % GROUPS] += 1
        g += 1
    nodes: list[NodeView] = []
    for g, count in enumerate(counts):
        name, per_node = CARDS[g % len(CARDS)]
        spec = accelerator(name)
        ownership = (Ownership.OWNED, Ownership.SPOT, Ownership.ON_DEMAND)[g % 3]
        price = spec.default_price_per_hour * per_node * rng.uniform(0.9, 1.1)
        if ownership is Ownership.SPOT:
            price *= 0.4
        for i in range(count):
            nodes.append(
                NodeView(
                    node_id=f"g{g:02d}-{i}",
                    group=f"g{g:02d}",
                    accelerator=name,
                    accelerator_count=per_node,
                    accelerator_memory_gib=spec.memory_gib,
                    price_per_hour=price,
                    ownership=ownership,
                )
            )
    return tuple(nodes)


def synthetic_shapes(
    model: str, params_b: float, width: int, nodes: Sequence[NodeView]
) -> list[ReplicaShape]:
    groups = {n.group: n for n in nodes}
    shapes: list[ReplicaShape] = []
    weights_gib = params_b * width * 1e9 / 2**30
    for group, node in sorted(groups.items()):
        spec = accelerator(node.accelerator)
        solver_price = node.price_per_accelerator_hour * (
            0.3 if node.ownership is Ownership.OWNED else 1.0
        )
        for tp in (1, 2, 4, 8):
            if tp > node.accelerator_count:
                break
            need = weights_gib / tp + 2.0
            fits = need <= 0.9 * spec.memory_gib
            speed = (
                spec.memory_bandwidth_gbps
                * 1e9
                * tp
                * (0.85 if tp > 1 else 1.0)
                / (weights_gib * 2**30)
            )
            capacity: dict[TrafficClass, float] = {}
            reasons: dict[TrafficClass, str] = {}
            for traffic_class in TrafficClass:
                target = TPOT_S.get(traffic_class)
                if target is not None and 1 / speed > target:
                    capacity[traffic_class] = 0.0
                    reasons[traffic_class] = (
                        f"TPOT at batch 1 is {1000 / speed:.0f} ms, "
                        f"the target {target * 1000:.0f} ms"
                    )
                    continue
                capacity[traffic_class] = (
                    speed * BATCH[traffic_class] * 0.5 / OUTPUT_TOKENS[traffic_class]
                )
            shapes.append(
                ReplicaShape(
                    model=model,
                    group=group,
                    accelerator=node.accelerator,
                    tensor_parallel=tp,
                    memory_per_device_gib=need,
                    fits=fits,
                    reason=""
                    if fits
                    else f"weights need {need:.1f} GiB per device of {spec.memory_gib:.0f} GiB",
                    decode_tokens_per_s=speed,
                    price_per_hour=solver_price * tp,
                    interruptible=node.ownership is Ownership.SPOT,
                    capacity=capacity if fits else {},
                    capacity_reasons=reasons,
                )
            )
    return shapes


def _with_demand(problem: PlacementProblem, size: int, rng: random.Random) -> PlacementProblem:
    """Rates that fill about ``UTILISATION`` of the fleet: each (model, class) gets a share of
    the accelerators, converted to req/s at the class's median capacity per accelerator."""
    share = UTILISATION * size / (len(problem.demands) * len(TrafficClass))
    demands: list[ModelDemand] = []
    for demand in problem.demands:
        classes: list[ClassDemand] = []
        for traffic_class in TrafficClass:
            per_accelerator = [
                s.capacity.get(traffic_class, 0.0) / s.tensor_parallel
                for s in demand.shapes
                if s.fits and s.capacity.get(traffic_class, 0.0) > 0
            ]
            rate = 0.0
            if per_accelerator and rng.random() > 0.1:
                rate = share * rng.uniform(0.3, 1.7) * statistics.median(per_accelerator)
            classes.append(ClassDemand(traffic_class, rate, 512, OUTPUT_TOKENS[traffic_class]))
        demands.append(dataclasses.replace(demand, classes=tuple(classes)))
    return dataclasses.replace(problem, demands=tuple(demands))


def real_problem(nodes: Sequence[NodeView], models: int) -> PlacementProblem | None:
    """The planner's problem for this fleet, or None when it does not fill capacities yet."""
    from scheduler.config import GearshiftConfig
    from scheduler.placement.planner import build_problem

    groups: dict[str, NodeView] = {}
    counts: dict[str, int] = {}
    for node in nodes:
        groups.setdefault(node.group, node)
        counts[node.group] = counts.get(node.group, 0) + 1
    data: dict[str, Any] = {
        "fleet": {
            "node_groups": [
                {
                    "name": g,
                    "accelerator": n.accelerator,
                    "accelerators_per_node": n.accelerator_count,
                    "nodes": counts[g],
                    "price_per_node_hour": n.price_per_hour,
                    "ownership": n.ownership.value,
                    **(
                        {"marginal_price_per_node_hour": 0.3 * n.price_per_hour}
                        if n.ownership is Ownership.OWNED
                        else {}
                    ),
                }
                for g, n in sorted(groups.items())
            ]
        },
        "models": [
            {
                "name": f"m{i:02d}",
                "catalog": MODELS[i % len(MODELS)][0],
                "dtype": "fp8" if MODELS[i % len(MODELS)][2] == 1 else "bfloat16",
                "replicas": 1,
                "max_context": 4096,
            }
            for i in range(models)
        ],
        "workload": [
            {"model": f"m{i:02d}", "class": c.value, "rate_per_s": 1.0}
            for i in range(models)
            for c in TrafficClass
        ],
    }
    try:
        config = GearshiftConfig.model_validate(data)
        problem = build_problem(config, nodes, [])
    except Exception as exc:  # the planner is being extended; fall back to synthetic numbers
        print(f"real planner unavailable ({type(exc).__name__}: {exc})")
        return None
    if not any(s.capacity for d in problem.demands for s in d.shapes):
        return None
    return problem


def synthetic_problem(
    nodes: Sequence[NodeView], models: int, rng: random.Random
) -> PlacementProblem:
    demands = []
    for i in range(models):
        _, params_b, width = MODELS[i % len(MODELS)]
        shapes = synthetic_shapes(f"m{i:02d}", params_b, width, nodes)
        demands.append(ModelDemand(f"m{i:02d}", rng.choice((1, 2)), tuple(shapes)))
    return PlacementProblem(tuple(nodes), tuple(demands))


def timed(solver: Any, problem: PlacementProblem, repeat: int) -> tuple[float, PlacementPlan]:
    times: list[float] = []
    plan: PlacementPlan | None = None
    for _ in range(repeat):
        started = time.perf_counter()
        plan = solver.solve(problem)
        times.append(time.perf_counter() - started)
    assert plan is not None
    return statistics.median(times), plan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000", help="Accelerators per instance.")
    parser.add_argument("--models", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--synthetic", action="store_true", help="Skip the real planner.")
    parser.add_argument(
        "--time-limit", type=float, default=None, help="cost-milp-solver's time_limit_s."
    )
    args = parser.parse_args()

    console = Console(width=150)
    params = (
        CostMilpParams()
        if args.time_limit is None
        else CostMilpParams(time_limit_s=args.time_limit)
    )
    milp = CostMilpSolver("milp", params)
    greedy = CostGreedySolver("greedy", CostGreedyParams())
    table = Table(
        title=f"cost solvers, {args.models} models × 3 classes, median of {args.repeat} "
        f"(MIP time limit {params.time_limit_s:g} s per HiGHS solve)"
    )
    for column in (
        "accelerators",
        "groups",
        "capacities",
        "MIP s",
        "greedy s",
        "MIP $/h",
        "greedy $/h",
        "greedy/MIP",
        "MIP proved optimal",
        "served (MIP)",
    ):
        table.add_column(column, justify="right")
    for size in (int(s) for s in args.sizes.split(",")):
        rng = random.Random(args.seed)
        nodes = fleet(size, rng)
        base = None if args.synthetic else real_problem(nodes, args.models)
        source = "planner" if base is not None else "synthetic (bandwidth)"
        if base is None:
            base = synthetic_problem(nodes, args.models, rng)
        problem = _with_demand(base, size, rng)
        accelerators = sum(n.accelerator_count for n in nodes)
        milp_s, best = timed(milp, problem, args.repeat)
        greedy_s, quick = timed(greedy, problem, args.repeat)
        demand = sum(c.demand_per_s for c in best.coverage)
        served = sum(c.served_per_s for c in best.coverage) / demand if demand else 1.0
        table.add_row(
            f"{accelerators:,}",
            str(len({n.group for n in nodes})),
            source,
            f"{milp_s:.2f}",
            f"{greedy_s:.2f}",
            f"{best.cost_per_hour:,.0f}",
            f"{quick.cost_per_hour:,.0f}",
            f"{quick.cost_per_hour / best.cost_per_hour:.3f}" if best.cost_per_hour else "-",
            "yes" if best.notes[0].startswith("optimal") else "no",
            f"{served:.1%}",
        )
        console.print(
            f"[dim]{accelerators:,} accelerators ({source}): {'; '.join(best.notes)}[/dim]"
        )
    console.print(table)
    console.print(
        f"[dim]python benchmarks/plan_time.py --sizes {args.sizes} --models "
        f"{args.models} --repeat {args.repeat} --seed {args.seed}[/dim]"
    )


if __name__ == "__main__":
    main()
