"""Placement ports: the problem a solver sees, the plan it returns, and the solver Protocol.

The planner (``scheduler.placement.planner``) precomputes, from the performance model, what a
replica of each model needs on each accelerator type and how much of each class's demand it
sustains within that class's targets (``ReplicaShape``), so solvers stay pure arithmetic over
immutable values and every solver sees the same feasible space.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from scheduler.framework.plugin import Plugin, Rejection
from scheduler.types import Ownership, TrafficClass


@dataclass(frozen=True, slots=True)
class NodeView:
    """One node of the inventory."""

    node_id: str
    group: str
    accelerator: str
    accelerator_count: int
    accelerator_memory_gib: float
    price_per_hour: float
    ownership: Ownership
    alive: bool = True
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def price_per_accelerator_hour(self) -> float:
        return self.price_per_hour / self.accelerator_count


@dataclass(frozen=True, slots=True)
class ReplicaShape:
    """What one replica of a model needs, and would do, on one accelerator type at one TP."""

    model: str
    group: str
    """Node group whose hardware this shape was computed for."""
    accelerator: str
    tensor_parallel: int
    memory_per_device_gib: float
    fits: bool
    reason: str
    """Why it does not fit (empty when it fits)."""
    decode_tokens_per_s: float = 0.0
    """Single-stream decode speed, for tie-breaks and reports."""
    on_cpu: bool = False
    """The node group has no accelerators: the engine runs on host CPUs."""
    price_per_hour: float = 0.0
    """What the cost solver counts for one replica: the group's solver price (marginal for
    owned hardware) per accelerator times TP; a whole node on CPU."""
    interruptible: bool = False
    """Spot capacity: it may vanish with little notice."""
    capacity: Mapping[TrafficClass, float] = field(default_factory=dict)
    """Requests per second of the model's demand of each class one replica sustains within the
    class's targets (the capacity table's entry for the demand's request-size bucket); 0 or
    absent: this shape cannot serve that class within its targets."""
    capacity_reasons: Mapping[TrafficClass, str] = field(default_factory=dict)
    """Why a class's capacity is 0 (e.g. the TPOT at batch 1 already misses the target)."""


@dataclass(frozen=True, slots=True)
class ClassDemand:
    """One traffic class's demand on a model: a rate and a representative request size."""

    traffic_class: TrafficClass
    rate_per_s: float
    prompt_tokens: int
    output_tokens: int


@dataclass(frozen=True, slots=True)
class ModelDemand:
    """What a model needs: a floor of replicas, per-class demand, and the shapes it may take."""

    model: str
    replicas: int
    """The floor: at least this many replicas run whatever the demand (availability)."""
    shapes: tuple[ReplicaShape, ...]
    classes: tuple[ClassDemand, ...] = ()
    """Demand per class; solvers that only count replicas ignore it."""


@dataclass(frozen=True, slots=True)
class ReplicaAssignment:
    """One replica placed on one node."""

    replica_id: str
    model: str
    node_id: str
    accelerator: str
    tensor_parallel: int
    price_per_hour: float


@dataclass(frozen=True, slots=True)
class PlacementProblem:
    nodes: tuple[NodeView, ...]
    demands: tuple[ModelDemand, ...]
    current: tuple[ReplicaAssignment, ...] = ()
    """What runs now (replicas on nodes that are still alive)."""
    hysteresis: float = 0.0
    """Starting a replica counts this fraction of its price on top (a replan must save more
    than that to replace what runs)."""
    max_disruptions: int | None = None
    """Most current replicas the plan may drop (None: no limit)."""


@dataclass(frozen=True, slots=True)
class Coverage:
    """How much of one model's class demand the plan's capacity covers."""

    model: str
    traffic_class: TrafficClass
    demand_per_s: float
    served_per_s: float
    """Demand the plan routes to replicas within their capacity (<= demand)."""

    @property
    def share(self) -> float:
        """Fraction of the demand covered (1.0 when there is none): the predicted SLO
        attainment of this class on this model."""
        return 1.0 if self.demand_per_s <= 0 else min(1.0, self.served_per_s / self.demand_per_s)


@dataclass(frozen=True, slots=True)
class PlacementPlan:
    """The desired replicas, the demand that could not be placed (with reasons), and cost."""

    assignments: tuple[ReplicaAssignment, ...]
    unplaced: tuple[Rejection, ...] = ()
    coverage: tuple[Coverage, ...] = ()
    """Per model and class, demand against planned capacity (solvers that see demand)."""
    notes: tuple[str, ...] = ()
    """How the plan was found (e.g. `optimal (HiGHS, 0.04 s)`, `greedy: MIP time limit`)."""

    @property
    def cost_per_hour(self) -> float:
        return sum(assignment.price_per_hour for assignment in self.assignments)


class PlacementSolver(Plugin, Protocol):
    def solve(self, problem: PlacementProblem) -> PlacementPlan:
        """A plan for the problem. Pure and deterministic; keeps ``current`` where still valid."""
        ...
