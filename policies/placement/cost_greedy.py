"""``cost-greedy-solver``: a fast cost-aware heuristic, and the MIP solver's fallback.

On the same aggregated model as ``cost-milp-solver`` (replica counts per candidate shape,
time-shared capacity, hardware per node group), in this order:

1. running replicas the disruption budget forces to stay (cheapest first);
2. floors, model by model: each missing replica takes the candidate the model's most urgent
   demand not yet covered would take (below), the cheapest once floors cover the demand (a
   running replica counts its price, a new one its price plus hysteresis);
3. demand, class by class (interactive, standard, batch) and model by model: first the spare
   time of the model's replicas already chosen (fastest for the class first), then new replicas,
   each the candidate with the lowest price per req/s of the class it would actually carry
   (``price / min(capacity, residual)``), until the class is served or no hardware is left.

Ties go to the faster candidate (``Candidate.rank``). It has the MIP's feasibility guarantees
(floors and demand are met whenever some order of choices meets them greedily) but not its
optimality. ``cost-milp-solver`` also runs it from the LP relaxation's rounded-down replicas
(LP rounding), and ``keep_current_allocation`` is its other fallback: only what runs, serving
what it can.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from policies.placement.cost_model import (
    CLASS_ORDER,
    DEMAND_TOLERANCE,
    NEW_REPLICA_PREMIUM,
    Allocation,
    Candidate,
    CostModel,
    build_cost_model,
)
from policies.placement.cost_plan import render
from scheduler.framework.placement import PlacementPlan, PlacementProblem, PlacementSolver
from scheduler.framework.plugin import PluginParams, PluginType
from scheduler.types import TrafficClass


class _Greedy:
    def __init__(self, model: CostModel) -> None:
        self.model = model
        count = len(model.candidates)
        self.replicas = [0] * count
        self.busy = [0.0] * count
        """Per candidate: replica-time used by the demand routed to it (<= replicas)."""
        self.served: dict[tuple[int, TrafficClass], float] = {}
        self.running = [len(c.current) for c in model.candidates]
        """Per candidate: running replicas not chosen yet."""
        self.free = {group: pool.accelerators for group, pool in model.pools.items()}
        self.slots = {
            (c.group, c.tensor_parallel): model.pools[c.group].replicas_at(c.tensor_parallel)
            for c in model.candidates
        }
        self.premium = NEW_REPLICA_PREMIUM * model.price_scale

    def has_room(self, candidate: Candidate) -> bool:
        return (
            self.free[candidate.group] >= candidate.tensor_parallel
            and self.slots[(candidate.group, candidate.tensor_parallel)] > 0
        )

    def cost(self, candidate: Candidate) -> float:
        if self.running[candidate.index] > 0:
            return candidate.price
        return candidate.price * (1 + self.model.problem.hysteresis) + self.premium

    def add(self, candidate: Candidate) -> None:
        self.replicas[candidate.index] += 1
        self.free[candidate.group] -= candidate.tensor_parallel
        self.slots[(candidate.group, candidate.tensor_parallel)] -= 1
        if self.running[candidate.index] > 0:
            self.running[candidate.index] -= 1

    def route(self, candidate: Candidate, traffic_class: TrafficClass, residual: float) -> float:
        """Route up to ``residual`` req/s to the candidate's spare time; the rest."""
        capacity = candidate.capacity(traffic_class)
        spare = self.replicas[candidate.index] - self.busy[candidate.index]
        take = min(residual, max(0.0, spare) * capacity)
        if take <= 0:
            return residual
        self.busy[candidate.index] += take / capacity
        key = (candidate.index, traffic_class)
        self.served[key] = self.served.get(key, 0.0) + take
        return residual - take

    def keep_forced(self) -> None:
        """Running replicas beyond the disruption budget stay, cheapest first."""
        budget = self.model.problem.max_disruptions
        if budget is None:
            return
        forced = self.model.current_count - budget
        running = sorted(
            (c.price, c.index, a.replica_id) for c in self.model.candidates for a in c.current
        )
        for _, index, _ in running[: max(0, forced)]:
            self.add(self.model.candidates[index])

    def fill_floors(self) -> None:
        """Each missing floor replica takes the candidate the model's most urgent demand not
        yet covered would take; once floors cover the demand, the cheapest."""
        for m, demand in enumerate(self.model.demands):
            options = [self.model.candidates[i] for i in self.model.by_model[m]]
            wants: list[tuple[TrafficClass, float]] = [
                (traffic_class, self.model.rate(m, traffic_class))
                for traffic_class in CLASS_ORDER
                if self.model.rate(m, traffic_class) > 0
                and any(c.capacity(traffic_class) > 0 for c in options)
            ]
            while sum(self.replicas[c.index] for c in options) < demand.replicas:
                fitting = [c for c in options if self.has_room(c)]
                if not fitting:
                    break
                if not wants:
                    self.add(min(fitting, key=lambda c: (self.cost(c), c.rank)))
                    continue
                traffic_class, residual = wants[0]
                best = min(fitting, key=lambda c: self._floor_key(c, traffic_class, residual))
                self.add(best)
                wants[0] = (traffic_class, residual - best.capacity(traffic_class))
                if wants[0][1] <= 0:
                    wants.pop(0)

    def _floor_key(
        self, candidate: Candidate, traffic_class: TrafficClass, residual: float
    ) -> tuple[bool, float, int]:
        capacity = candidate.capacity(traffic_class)
        if capacity <= 0:
            return (True, self.cost(candidate), candidate.rank)
        return (False, self.cost(candidate) / min(capacity, residual), candidate.rank)

    def serve(self, m: int, traffic_class: TrafficClass, allow_new: bool) -> None:
        rate = self.model.rate(m, traffic_class)
        residual = rate
        options = [
            self.model.candidates[i]
            for i in self.model.by_model[m]
            if self.model.candidates[i].capacity(traffic_class) > 0
        ]
        for candidate in sorted(options, key=lambda c: (-c.capacity(traffic_class), c.index)):
            residual = self.route(candidate, traffic_class, residual)
        while allow_new and residual > DEMAND_TOLERANCE * max(1.0, rate):
            fitting = [c for c in options if self.has_room(c)]
            if not fitting:
                return
            best = min(
                fitting,
                key=lambda c: (
                    self.cost(c) / min(c.capacity(traffic_class), residual),
                    c.rank,
                ),
            )
            self.add(best)
            residual = self.route(best, traffic_class, residual)

    def allocation(self, how: str) -> Allocation:
        return Allocation(tuple(self.replicas), dict(self.served), how)


def greedy_allocation(
    model: CostModel, how: str = "greedy", start: Sequence[int] | None = None
) -> Allocation:
    """The heuristic's allocation for ``model``; ``how`` goes into the plan's notes. With
    ``start`` (replicas per candidate, e.g. a relaxation's rounded-down solution) those
    replicas are chosen first, after what the disruption budget keeps, as far as they fit."""
    greedy = _Greedy(model)
    greedy.keep_forced()
    for candidate, wanted in zip(model.candidates, start or (), strict=False):
        while greedy.replicas[candidate.index] < wanted and greedy.has_room(candidate):
            greedy.add(candidate)
    greedy.fill_floors()
    for traffic_class in CLASS_ORDER:
        for m in range(len(model.demands)):
            greedy.serve(m, traffic_class, allow_new=True)
    return greedy.allocation(how)


def keep_current_allocation(model: CostModel, how: str) -> Allocation:
    """Every running replica that may stay, and nothing new; demand gets their capacity."""
    greedy = _Greedy(model)
    for candidate in model.candidates:
        for _ in candidate.current:
            greedy.add(candidate)
    for traffic_class in CLASS_ORDER:
        for m in range(len(model.demands)):
            greedy.serve(m, traffic_class, allow_new=False)
    return greedy.allocation(how)


class CostGreedyParams(PluginParams):
    """The heuristic has no knobs: it follows the problem's hysteresis and disruption budget."""


@dataclass(frozen=True, slots=True)
class CostGreedySolver:
    TYPE: ClassVar[str] = "cost-greedy-solver"
    name: str
    params: CostGreedyParams

    def solve(self, problem: PlacementProblem) -> PlacementPlan:
        model = build_cost_model(problem)
        return render(model, greedy_allocation(model, "greedy (cost-greedy-solver)"))


PLUGIN = PluginType(
    type_name=CostGreedySolver.TYPE,
    kind=PlacementSolver,
    params=CostGreedyParams,
    factory=CostGreedySolver,
    summary="Meets floors then demand class by class, adding the replica with the lowest price "
    "per req/s on free hardware (fast, not optimal; the MIP solver's fallback).",
)
