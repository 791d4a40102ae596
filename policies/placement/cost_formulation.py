"""The mixed-integer program of ``cost-milp-solver`` as sparse matrices, and its solution read back.

``formulate`` writes the model stated in ``cost_milp``'s docstring: one integer column per
candidate (never per node), continuous routing and slack columns, rows in CSR form. Costs are in
units of the largest candidate price so the penalties' magnitudes are the same on every fleet;
routed demand is in units of the class's best replica (``ref``) so coefficients stay near 1.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import Bounds, LinearConstraint
from scipy.sparse import csr_array

from policies.placement.cost_model import (
    CLASS_ORDER,
    NEW_REPLICA_PREMIUM,
    Allocation,
    Candidate,
    CostModel,
)
from scheduler.types import TrafficClass

UNSERVED_PENALTY: dict[TrafficClass, float] = {
    TrafficClass.INTERACTIVE: 1e5,
    TrafficClass.STANDARD: 1e4,
    TrafficClass.BATCH: 1e3,
}
"""Cost of leaving one best-replica's worth of a class's demand unserved, in units of the largest
candidate price: a replica that serves at least 0.1 % of that is always worth buying."""

FLOOR_PENALTY = 1e6
"""Cost of each replica a floor misses: floors come before any demand."""

REPLICA_MIN_COST = 1e-3
"""What every replica costs at least (power, wear), so free owned hardware is not filled with
replicas nobody needs, and ties above HiGHS's absolute gap (1e-6) are still decided."""

RANK_EPSILON = 1e-4
"""Largest tie-break surcharge per replica (faster and accelerator-backed candidates first);
best effort: HiGHS may stop within its gap before honouring it."""

_SLACK_ROOM = 1e-7
"""How far phase 2 may exceed phase 1's slack (solver feasibility tolerance)."""


@dataclass(slots=True)
class Program:
    """Columns (cost, bounds, integrality) and rows (sparse triplets with bounds)."""

    cost: list[float] = field(default_factory=list)
    lower: list[float] = field(default_factory=list)
    upper: list[float] = field(default_factory=list)
    integer: list[int] = field(default_factory=list)
    row_index: list[int] = field(default_factory=list)
    col_index: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    row_lower: list[float] = field(default_factory=list)
    row_upper: list[float] = field(default_factory=list)

    def column(self, cost: float, lower: float, upper: float, integer: bool = False) -> int:
        self.cost.append(cost)
        self.lower.append(lower)
        self.upper.append(upper)
        self.integer.append(1 if integer else 0)
        return len(self.cost) - 1

    def row(self, terms: Iterable[tuple[int, float]], lower: float, upper: float) -> None:
        row = len(self.row_lower)
        for col, value in terms:
            self.row_index.append(row)
            self.col_index.append(col)
            self.values.append(value)
        self.row_lower.append(lower)
        self.row_upper.append(upper)

    def objective(self) -> NDArray[np.float64]:
        return np.array(self.cost, dtype=np.float64)

    def bounds(self) -> Bounds:
        return Bounds(np.array(self.lower), np.array(self.upper))

    def constraints(self) -> list[LinearConstraint]:
        if not self.row_lower:
            return []
        shape = (len(self.row_lower), len(self.cost))
        matrix = csr_array((self.values, (self.row_index, self.col_index)), shape=shape)
        return [LinearConstraint(matrix, np.array(self.row_lower), np.array(self.row_upper))]


@dataclass(slots=True)
class Formulation:
    """The program and where each decision lives in it (x_s is column s)."""

    program: Program
    routed: dict[tuple[int, TrafficClass], int]
    """(candidate, class) -> column of y (in units of ``ref``)."""
    ref: dict[tuple[int, TrafficClass], float]
    """(model, class) -> capacity of the class's best candidate."""
    unserved: dict[tuple[int, TrafficClass], int]
    """(model, class) -> column of u (in units of ``ref``)."""
    floor_gap: dict[int, int]
    """model -> column of f."""
    started: dict[int, int] = field(default_factory=dict)
    """candidate with running replicas -> column of new."""
    dropped: dict[int, int] = field(default_factory=dict)
    """candidate with running replicas -> column of removed (with a disruption budget)."""

    @property
    def slack_columns(self) -> list[int]:
        return [*self.unserved.values(), *self.floor_gap.values()]

    def cap_slack(self, solution: NDArray[np.float64]) -> None:
        """Phase 2: slack may not exceed ``solution``'s and costs nothing (only hardware
        counts)."""
        for col in self.slack_columns:
            self.program.upper[col] = max(0.0, float(solution[col])) + _SLACK_ROOM
            self.program.cost[col] = 0.0

    def point(self, model: CostModel, chosen: Allocation) -> NDArray[np.float64]:
        """The program's variables for an allocation found without it (the heuristics), so
        every plan is priced by one objective."""
        point = np.zeros(len(self.program.cost), dtype=np.float64)
        point[: len(chosen.replicas)] = chosen.replicas
        served: dict[tuple[int, TrafficClass], float] = {}
        for (i, traffic_class), rate in chosen.served.items():
            m = model.candidates[i].model
            served[(m, traffic_class)] = served.get((m, traffic_class), 0.0) + rate
            col = self.routed.get((i, traffic_class))
            if col is not None:
                point[col] = rate / self.ref[(m, traffic_class)]
        for (m, traffic_class), col in self.unserved.items():
            left = model.rate(m, traffic_class) - served.get((m, traffic_class), 0.0)
            point[col] = max(0.0, left) / self.ref[(m, traffic_class)]
        for m, col in self.floor_gap.items():
            placed = sum(chosen.replicas[i] for i in model.by_model[m])
            point[col] = max(0, model.demands[m].replicas - placed)
        for i, col in self.started.items():
            point[col] = max(0, chosen.replicas[i] - len(model.candidates[i].current))
        for i, col in self.dropped.items():
            point[col] = max(0, len(model.candidates[i].current) - chosen.replicas[i])
        return point

    def value(self, point: NDArray[np.float64]) -> float:
        return float(self.program.objective() @ point)

    def has_slack(self, point: NDArray[np.float64]) -> bool:
        """Demand left unserved or a floor unmet."""
        return any(point[col] > 1e-6 for col in self.slack_columns)


def _upper(model: CostModel, candidate: Candidate) -> int:
    """No optimum runs more replicas of a candidate than its floor plus what it would need to
    serve all of its model's demand alone, unless the disruption budget keeps running ones."""
    pool = model.pools[candidate.group]
    tp = candidate.tensor_parallel
    hardware = min(pool.replicas_at(tp), pool.accelerators // tp)
    useful = model.demands[candidate.model].replicas
    for traffic_class in CLASS_ORDER:
        capacity = candidate.capacity(traffic_class)
        if capacity > 0:
            useful += math.ceil(model.rate(candidate.model, traffic_class) / capacity)
    return min(hardware, max(len(candidate.current), useful))


def formulate(model: CostModel) -> Formulation:
    problem = model.problem
    scale = model.price_scale
    step = RANK_EPSILON / max(1, len(model.candidates))
    program = Program()
    new_cost: list[float] = []
    for candidate in model.candidates:
        price = candidate.price / scale
        new_cost.append(problem.hysteresis * price + NEW_REPLICA_PREMIUM)
        premium = 0.0 if candidate.current else new_cost[-1]
        base = price + REPLICA_MIN_COST + step * candidate.rank
        program.column(base + premium, 0, _upper(model, candidate), True)

    formulation = Formulation(program, {}, {}, {}, {})
    for m in range(len(model.demands)):
        for traffic_class in CLASS_ORDER:
            rate = model.rate(m, traffic_class)
            serving = [
                model.candidates[i]
                for i in model.by_model[m]
                if model.candidates[i].capacity(traffic_class) > 0
            ]
            if rate <= 0 or not serving:
                continue
            ref = max(c.capacity(traffic_class) for c in serving)
            need = rate / ref
            formulation.ref[(m, traffic_class)] = ref
            terms = []
            for candidate in serving:
                col = program.column(0.0, 0.0, need)
                formulation.routed[(candidate.index, traffic_class)] = col
                terms.append((col, 1.0))
            slack = program.column(UNSERVED_PENALTY[traffic_class], 0.0, need)
            formulation.unserved[(m, traffic_class)] = slack
            program.row([*terms, (slack, 1.0)], need, need)

    for candidate in model.candidates:
        share = [
            (formulation.routed[key], formulation.ref[(candidate.model, c)] / candidate.capacity(c))
            for c in CLASS_ORDER
            if (key := (candidate.index, c)) in formulation.routed
        ]
        if share:
            program.row([*share, (candidate.index, -1.0)], -np.inf, 0.0)

    for m, demand in enumerate(model.demands):
        if demand.replicas > 0 and model.by_model[m]:
            gap = program.column(FLOOR_PENALTY, 0.0, demand.replicas)
            formulation.floor_gap[m] = gap
            terms = [(i, 1.0) for i in model.by_model[m]]
            program.row([*terms, (gap, 1.0)], demand.replicas, np.inf)

    for group, pool in model.pools.items():
        members = [model.candidates[i] for i in model.by_pool[group]]
        if not members:
            continue
        program.row([(c.index, c.tensor_parallel) for c in members], -np.inf, pool.accelerators)
        for tp in sorted({c.tensor_parallel for c in members}):
            slots = pool.replicas_at(tp)
            if slots < pool.accelerators // tp:
                same = [(c.index, 1.0) for c in members if c.tensor_parallel == tp]
                program.row(same, -np.inf, slots)

    removed: list[tuple[int, float]] = []
    for candidate in model.candidates:
        running = len(candidate.current)
        if not running:
            continue
        new = program.column(new_cost[candidate.index], 0.0, program.upper[candidate.index])
        formulation.started[candidate.index] = new
        program.row([(candidate.index, 1.0), (new, -1.0)], -np.inf, running)
        if problem.max_disruptions is not None:
            gone = program.column(0.0, 0.0, running)
            formulation.dropped[candidate.index] = gone
            program.row([(candidate.index, 1.0), (gone, 1.0)], running, np.inf)
            removed.append((gone, 1.0))
    if removed and problem.max_disruptions is not None:
        program.row(removed, -np.inf, problem.max_disruptions)
    return formulation


def allocation(
    model: CostModel, formulation: Formulation, solution: NDArray[np.float64], how: str
) -> Allocation:
    """Replica counts (rounded) and the demand routed to them, clipped so no candidate's
    replicas are busier than their time allows (solver tolerances)."""
    replicas = tuple(int(round(float(v))) for v in solution[: len(model.candidates)])
    served: dict[tuple[int, TrafficClass], float] = {}
    busy = [0.0] * len(model.candidates)
    for (i, traffic_class), col in formulation.routed.items():
        ref = formulation.ref[(model.candidates[i].model, traffic_class)]
        rate = max(0.0, float(solution[col])) * ref
        if rate > 0:
            served[(i, traffic_class)] = rate
            busy[i] += rate / model.candidates[i].capacity(traffic_class)
    for (i, traffic_class), rate in list(served.items()):
        if busy[i] > replicas[i]:
            served[(i, traffic_class)] = rate * replicas[i] / busy[i]
    return Allocation(replicas, served, how)
