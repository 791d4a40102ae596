"""Placement ports: the problem a solver sees, the plan it returns, and the solver Protocol.

The planner (``scheduler.placement.planner``) precomputes, from the performance model, what a
replica of each model needs on each accelerator type (``ReplicaShape``), so solvers stay pure
arithmetic over immutable values and every solver sees the same feasible space.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from scheduler.framework.plugin import Plugin, Rejection
from scheduler.types import Ownership


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


@dataclass(frozen=True, slots=True)
class ModelDemand:
    """How many replicas a model needs, and the shapes it may take."""

    model: str
    replicas: int
    shapes: tuple[ReplicaShape, ...]


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


@dataclass(frozen=True, slots=True)
class PlacementPlan:
    """The desired replicas, the demand that could not be placed (with reasons), and cost."""

    assignments: tuple[ReplicaAssignment, ...]
    unplaced: tuple[Rejection, ...] = ()

    @property
    def cost_per_hour(self) -> float:
        return sum(assignment.price_per_hour for assignment in self.assignments)


class PlacementSolver(Plugin, Protocol):
    def solve(self, problem: PlacementProblem) -> PlacementPlan:
        """A plan for the problem. Pure and deterministic; keeps ``current`` where still valid."""
        ...
