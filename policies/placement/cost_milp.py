"""``cost-milp-solver``: the cheapest fleet that meets floors and serves each class's demand
within its targets, as a mixed-integer program solved by HiGHS, with a greedy fallback.

Candidates s are the fitting shapes (model × node group × TP) on groups with alive nodes; nodes
of a group are aggregated, so the program's size grows with groups and models, never with
nodes. For model m and class c with demand rate_{m,c}:

    x_s ∈ ℤ≥0        replicas of shape s
    y_{s,c} ≥ 0      req/s of class c routed to s (only where capacity cap_{s,c} > 0)
    u_{m,c} ≥ 0      demand left unserved;   f_m ≥ 0   replicas the floor misses

    demand       Σ_s y_{s,c} + u_{m,c} = rate_{m,c}
    time share   Σ_c y_{s,c} / cap_{s,c} ≤ x_s     (a replica's time is split between classes:
                                                   batch uses what interactive leaves)
    floor        Σ_{s of m} x_s + f_m ≥ replicas_m
    hardware     Σ_{s on g} TP_s·x_s ≤ free accelerators of group g (alive nodes; a CPU node
                 counts as one), and Σ_{s on g, TP t} x_s ≤ Σ_nodes ⌊accelerators/t⌋ (TP never
                 spans nodes)
    hysteresis   new_s ≥ x_s − current_s
    disruptions  removed_s ≥ current_s − x_s,  Σ_s removed_s ≤ max_disruptions (when set)

    minimise  Σ_s price_s·x_s + Σ_s (hysteresis·price_s + ε_new)·new_s + ε_rank·rank_s·x_s
              + Σ_{m,c} w_c·u_{m,c}/ref_{m,c} + W_floor·Σ_m f_m

with w_interactive ≫ w_standard ≫ w_batch ≫ any replica's price and W_floor above all of them
(``cost_formulation``): demand is served whenever hardware allows, floors first. Every replica
also costs a small ε (idle free hardware is not filled), ε_new keeps what runs on ties and
ε_rank prefers faster shapes; with HiGHS deterministic, so is the plan.

How a plan is found (each HiGHS call bounded by ``time_limit_s``):

1. HiGHS solves the LP relaxation: a lower bound on every plan's cost, and fractional replicas.
2. Two incumbents priced by the same objective: LP rounding (the relaxation's replicas rounded
   down, completed by the greedy heuristic) and the greedy heuristic alone.
3. If the better one is within ``mip_rel_gap`` of the bound it is proven optimal enough and
   final. Otherwise HiGHS solves the MIP; its plan replaces the incumbent when no dearer, and
   its dual bound tightens the certificate. On fleets of thousands of accelerators the bound
   stays a few per cent under the optimum (replicas are whole), so the MIP stops at its limit
   and LP rounding usually stands; on small problems HiGHS proves the optimum in milliseconds.
4. When the chosen plan leaves slack (the fleet is too small), HiGHS solves once more with every
   slack capped at that plan's and the penalties dropped: the cheapest plan serving as much,
   so the gap measures hardware cost, not penalties.

Why HiGHS through ``scipy.optimize.milp``: it returns a proven optimum, or under a time limit
the best plan found with a certified bound on the optimum; it already ships with scipy (no new
dependency, no licence); and it takes sparse matrices, a time limit and a relative-gap target.
What scipy does not expose (a starting solution, an objective cutoff) is why the incumbents of
step 2 are compared outside HiGHS rather than handed to it. When HiGHS cannot even solve the
relaxation (any failure, or no solution in time), the plan comes from the fallback and the
notes say why. Notes never carry wall time: plans are deterministic, timing is the framework's.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import Field
from scipy.optimize import milp

from policies.placement.cost_formulation import Formulation, allocation, formulate
from policies.placement.cost_greedy import greedy_allocation, keep_current_allocation
from policies.placement.cost_model import Allocation, CostModel, build_cost_model
from policies.placement.cost_plan import render
from scheduler.framework.placement import PlacementPlan, PlacementProblem, PlacementSolver
from scheduler.framework.plugin import PluginParams, PluginType

_OPTIMAL_STATUS = 0
_TIME_LIMIT_STATUS = 1
"""scipy's status for 'iteration or time limit reached' (with or without a solution)."""


class CostMilpParams(PluginParams):
    time_limit_s: float = Field(
        0.5,
        gt=0,
        le=3600,
        description="Wall-clock limit of each HiGHS solve, in seconds (the relaxation, the MIP, "
        "and a second MIP only when the fleet cannot serve all demand); past it the best plan "
        "found so far is used.",
    )
    mip_rel_gap: float = Field(
        1e-4,
        ge=0,
        lt=1,
        description="A plan proven within this fraction of the optimum is final: the MIP is not "
        "run when LP rounding already is, and HiGHS stops once its plan is.",
    )
    fallback: Literal["greedy", "keep-current"] = Field(
        "greedy",
        description="What plans when HiGHS fails or finds no plan in time: `greedy` "
        "(cost-greedy-solver's heuristic) or `keep-current` (only the replicas running now).",
    )


@dataclass(frozen=True, slots=True)
class _Outcome:
    solution: NDArray[np.float64] | None
    optimal: bool
    bound: float
    """A lower bound on the optimum (-inf when HiGHS proved none)."""
    status: str
    """How HiGHS ended, in words for the notes."""


@dataclass(frozen=True, slots=True)
class _Priced:
    allocation: Allocation
    point: NDArray[np.float64]
    value: float
    source: str


def _finite(value: object) -> float:
    number = float(value) if isinstance(value, int | float | np.floating) else math.nan
    return number if math.isfinite(number) else -math.inf


class _Highs:
    def __init__(self, params: CostMilpParams) -> None:
        self.params = params

    def run(self, formulation: Formulation, relax: bool = False) -> _Outcome:
        """One HiGHS solve of the program (``relax``: its LP relaxation)."""
        program = formulation.program
        integrality = np.zeros(len(program.cost)) if relax else np.array(program.integer)
        limit = f"{self.params.time_limit_s:g} s"
        try:
            result = milp(
                program.objective(),
                integrality=integrality,
                bounds=program.bounds(),
                constraints=program.constraints(),
                options={
                    "time_limit": self.params.time_limit_s,
                    "mip_rel_gap": self.params.mip_rel_gap,
                    "presolve": True,
                    "disp": False,
                },
            )
        except (ValueError, RuntimeError, MemoryError) as exc:
            # scipy rejects malformed input with ValueError; HiGHS errors surface as the other
            # two. Each means "no plan from HiGHS": the caller falls back and notes why.
            return _Outcome(None, False, -math.inf, f"failed ({exc})")
        optimal = result.status == _OPTIMAL_STATUS
        if result.x is None:
            if result.status == _TIME_LIMIT_STATUS:
                return _Outcome(None, False, -math.inf, f"found no plan within {limit}")
            return _Outcome(None, False, -math.inf, f"found no plan ({result.message})")
        if relax:  # an LP value bounds the optimum only once the LP is solved
            bound = _finite(result.fun) if optimal else -math.inf
        else:
            bound = _finite(result.mip_dual_bound)
        status = "proved optimal" if optimal else f"stopped at its {limit} limit"
        return _Outcome(np.asarray(result.x, dtype=np.float64), optimal, bound, status)


def _gap(value: float, bound: float) -> float:
    if value - bound <= 1e-9 * max(1.0, abs(value)):
        return 0.0
    return (value - bound) / abs(value) if value else math.inf


@dataclass(frozen=True, slots=True)
class CostMilpSolver:
    TYPE: ClassVar[str] = "cost-milp-solver"
    name: str
    params: CostMilpParams

    def solve(self, problem: PlacementProblem) -> PlacementPlan:
        model = build_cost_model(problem)
        return render(model, self._allocate(model))

    def _allocate(self, model: CostModel) -> Allocation:
        if not model.candidates:
            return Allocation((), {}, "nothing to optimise: no fitting shape on an alive node")
        formulation = formulate(model)
        highs = _Highs(self.params)
        relaxed = highs.run(formulation, relax=True)
        if relaxed.solution is None:
            return self._fallback(model, f"HiGHS {relaxed.status}")
        count = len(model.candidates)
        rounded = [math.floor(v + 1e-6) for v in relaxed.solution[:count]]
        best = min(
            (
                self._priced(
                    model, formulation, greedy_allocation(model, start=rounded), "LP rounding"
                ),
                self._priced(model, formulation, greedy_allocation(model), "greedy"),
            ),
            key=lambda plan: plan.value,
        )
        bound, exact = relaxed.bound, None
        if _gap(best.value, bound) > self.params.mip_rel_gap:
            exact = highs.run(formulation)
            bound = max(bound, exact.bound)
            if exact.solution is not None:
                found = allocation(model, formulation, exact.solution, "")
                mip = self._priced(model, formulation, found, "HiGHS MIP")
                if mip.value <= best.value + 1e-9 * abs(best.value):
                    best = mip
        how = self._describe(best, bound, exact)
        if formulation.has_slack(best.point):
            best, how = self._cheapest_at_service(model, formulation, highs, best, how)
        return dataclasses.replace(best.allocation, how=how)

    def _priced(
        self, model: CostModel, formulation: Formulation, chosen: Allocation, source: str
    ) -> _Priced:
        point = formulation.point(model, chosen)
        return _Priced(chosen, point, formulation.value(point), source)

    def _describe(self, best: _Priced, bound: float, exact: _Outcome | None) -> str:
        """How the plan was found, in words that do not change between identical solves (no
        timings, sizes or node counts: replanning the same problem gives the same plan)."""
        gap = _gap(best.value, bound)
        if gap <= self.params.mip_rel_gap or (
            best.source == "HiGHS MIP" and exact and exact.optimal
        ):
            return f"optimal (proven within {self.params.mip_rel_gap:.2%} of the optimum by HiGHS)"
        within = "an unknown margin" if math.isinf(gap) else f"at most {gap:.2%}"
        mip = f"HiGHS MIP {exact.status}" if exact else "HiGHS MIP not run"
        return f"{best.source} plan, {within} above the optimum ({mip})"

    def _cheapest_at_service(
        self,
        model: CostModel,
        formulation: Formulation,
        highs: _Highs,
        best: _Priced,
        how: str,
    ) -> tuple[_Priced, str]:
        """Phase 2: every slack capped at ``best``'s, penalties dropped: the cheapest plan that
        serves as much (the gap of a penalty-dominated objective says little about cost)."""
        formulation.cap_slack(best.point)
        second = highs.run(formulation)
        head = f"demand exceeds the fleet; serving the most it can: {how}"
        if second.solution is None:
            return best, f"{head}; its cost not minimised further (HiGHS {second.status})"
        found = self._priced(
            model, formulation, allocation(model, formulation, second.solution, ""), "HiGHS MIP"
        )
        if formulation.value(found.point) > formulation.value(best.point):
            return best, f"{head}; HiGHS found no cheaper plan serving as much ({second.status})"
        return found, f"{head}; cheapest at that service: HiGHS {second.status}"

    def _fallback(self, model: CostModel, failure: str) -> Allocation:
        if self.params.fallback == "keep-current":
            return keep_current_allocation(model, f"keep-current fallback: {failure}")
        return greedy_allocation(model, f"greedy fallback: {failure}")


PLUGIN = PluginType(
    type_name=CostMilpSolver.TYPE,
    kind=PlacementSolver,
    params=CostMilpParams,
    factory=CostMilpSolver,
    summary="Finds the cheapest replicas per shape that meet floors and serve each class's "
    "demand within its targets, as a MIP solved by HiGHS (greedy fallback).",
)
