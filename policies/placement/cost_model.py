"""The aggregated view the cost solvers optimise: candidate shapes, hardware pools, what runs.

``cost-milp-solver`` and ``cost-greedy-solver`` both decide *how many* replicas of each
candidate run and how much of each class's demand each candidate serves (an ``Allocation``);
nodes reappear only when ``cost_packing`` packs those counts. A candidate is a fitting
``ReplicaShape`` (model × node group × TP) on a group with alive nodes; a pool is one node
group's alive nodes. Invariants: candidates are ordered by (model, group, TP) and carry a
``rank`` (faster and accelerator-backed first) that both solvers use for tie-breaks, and
``current`` holds only running replicas the plan may keep (alive node, still-fitting shape, no
node over-committed), each id once.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from scheduler.framework.placement import (
    ModelDemand,
    NodeView,
    PlacementProblem,
    ReplicaAssignment,
    ReplicaShape,
)
from scheduler.types import TrafficClass

CLASS_ORDER: tuple[TrafficClass, ...] = (
    TrafficClass.INTERACTIVE,
    TrafficClass.STANDARD,
    TrafficClass.BATCH,
)
"""The order demand is served in when hardware is short (greedy) and the penalty order (MIP)."""

DEMAND_TOLERANCE = 1e-6
"""Unserved demand below this fraction of the rate (or of 1 req/s) counts as served."""

NEW_REPLICA_PREMIUM = 1e-3
"""Extra cost of starting a replica over keeping a running one, as a fraction of the largest
candidate price: a tie-break that keeps what runs (``hysteresis`` adds to it)."""


@dataclass(frozen=True, slots=True)
class Pool:
    """One node group's alive nodes (sorted by id): the hardware replicas are packed onto."""

    group: str
    accelerator: str
    on_cpu: bool
    """A CPU group: each node runs one replica (TP 1) whatever its slot count."""
    nodes: tuple[NodeView, ...]
    sizes: Mapping[int, int]
    """Nodes per slot count (``Pool.of`` counts them)."""

    @classmethod
    def of(cls, group: str, on_cpu: bool, nodes: tuple[NodeView, ...]) -> Pool:
        sizes = Counter(1 if on_cpu else node.accelerator_count for node in nodes)
        return cls(group, nodes[0].accelerator, on_cpu, nodes, dict(sizes))

    def slots(self, node: NodeView) -> int:
        """Accelerators of ``node`` a replica can take (a CPU node counts as one)."""
        return 1 if self.on_cpu else node.accelerator_count

    @property
    def accelerators(self) -> int:
        return sum(size * count for size, count in self.sizes.items())

    def replicas_at(self, tensor_parallel: int) -> int:
        """How many replicas of this TP fit if nothing else runs (TP never spans nodes)."""
        return sum(size // tensor_parallel * count for size, count in self.sizes.items())

    def price(self, node: NodeView, tensor_parallel: int) -> float:
        """What a replica on ``node`` really costs per hour (a whole node on CPU)."""
        if self.on_cpu:
            return node.price_per_hour
        return node.price_per_accelerator_hour * tensor_parallel


@dataclass(frozen=True, slots=True)
class Candidate:
    """A shape a model's replicas may take, with the running replicas the plan may keep."""

    index: int
    model: int
    """Index into ``CostModel.demands``."""
    shape: ReplicaShape
    rank: int
    """Tie-break position among all candidates: accelerator before CPU, faster, smaller TP."""
    current: tuple[ReplicaAssignment, ...]
    capacities: Mapping[TrafficClass, float]
    """Req/s of each class one replica sustains within targets (> 0 only)."""

    @property
    def group(self) -> str:
        return self.shape.group

    @property
    def tensor_parallel(self) -> int:
        return self.shape.tensor_parallel

    @property
    def price(self) -> float:
        return self.shape.price_per_hour

    def capacity(self, traffic_class: TrafficClass) -> float:
        """Req/s of ``traffic_class`` one replica sustains within targets (0: cannot)."""
        return self.capacities.get(traffic_class, 0.0)


def _capacities(shape: ReplicaShape) -> dict[TrafficClass, float]:
    return {
        traffic_class: value
        for traffic_class, value in shape.capacity.items()
        if math.isfinite(value) and value > 0
    }


@dataclass(frozen=True, slots=True)
class CostModel:
    problem: PlacementProblem
    demands: tuple[ModelDemand, ...]
    """One per model name (the first when a name repeats), in problem order."""
    rates: tuple[Mapping[TrafficClass, float], ...]
    """Per model: req/s per class with demand (> 0)."""
    candidates: tuple[Candidate, ...]
    by_model: tuple[tuple[int, ...], ...]
    """Per model: indices of its candidates."""
    pools: Mapping[str, Pool]
    by_pool: Mapping[str, tuple[int, ...]]
    """Per pool (group): indices of the candidates on it."""

    def rate(self, model: int, traffic_class: TrafficClass) -> float:
        return self.rates[model].get(traffic_class, 0.0)

    @property
    def price_scale(self) -> float:
        """The largest candidate price (1 when every price is 0): the MIP's cost unit."""
        return max((c.price for c in self.candidates), default=0.0) or 1.0

    @property
    def current_count(self) -> int:
        return sum(len(c.current) for c in self.candidates)


@dataclass(frozen=True, slots=True)
class Allocation:
    """A solver's decision before packing: replicas per candidate and req/s each serves."""

    replicas: tuple[int, ...]
    """Per candidate, in ``CostModel.candidates`` order."""
    served: Mapping[tuple[int, TrafficClass], float]
    """Req/s of a class routed to a candidate's replicas (within their time-shared capacity)."""
    how: str
    """How it was found, for the plan's notes (e.g. ``optimal (HiGHS ...)``)."""


def _rank_key(shape: ReplicaShape) -> tuple[bool, float, int, str]:
    return (shape.on_cpu, -shape.decode_tokens_per_s, shape.tensor_parallel, shape.group)


def _pools(problem: PlacementProblem, demands: tuple[ModelDemand, ...]) -> dict[str, Pool]:
    cpu_groups = {s.group for d in demands for s in d.shapes if s.on_cpu}
    nodes: dict[str, list[NodeView]] = {}
    for node in sorted(problem.nodes, key=lambda n: n.node_id):
        if node.alive:
            nodes.setdefault(node.group, []).append(node)
    return {
        group: Pool.of(group, group in cpu_groups, tuple(members))
        for group, members in sorted(nodes.items())
    }


def _keepable(
    problem: PlacementProblem, pools: Mapping[str, Pool], index: Mapping[tuple[str, str, int], int]
) -> dict[int, list[ReplicaAssignment]]:
    """Running replicas the plan may keep, per candidate: on an alive node of a still-fitting
    shape, without over-committing a node (what runs can be wrong: lost stops, races)."""
    nodes = {n.node_id: (pool, n) for pool in pools.values() for n in pool.nodes}
    free = {node_id: pool.slots(node) for node_id, (pool, node) in nodes.items()}
    seen: set[str] = set()
    keep: dict[int, list[ReplicaAssignment]] = {}
    for assignment in sorted(problem.current, key=lambda a: a.replica_id):
        located = nodes.get(assignment.node_id)
        if assignment.replica_id in seen or located is None:
            continue
        pool, node = located
        key = (assignment.model, node.group, assignment.tensor_parallel)
        candidate = index.get(key)
        need = assignment.tensor_parallel
        if candidate is None or assignment.accelerator != node.accelerator:
            continue
        if free[node.node_id] < need:
            continue
        free[node.node_id] -= need
        seen.add(assignment.replica_id)
        keep.setdefault(candidate, []).append(assignment)
    return keep


def build_cost_model(problem: PlacementProblem) -> CostModel:
    """The candidates, pools and keepable running replicas of ``problem``."""
    demands: list[ModelDemand] = []
    for demand in problem.demands:
        if all(d.model != demand.model for d in demands):
            demands.append(demand)
    pools = _pools(problem, tuple(demands))
    shapes: list[tuple[int, ReplicaShape]] = []
    seen: set[tuple[str, str, int]] = set()
    for m, demand in enumerate(demands):
        for shape in sorted(demand.shapes, key=lambda s: (s.group, s.tensor_parallel)):
            key = (demand.model, shape.group, shape.tensor_parallel)
            pool = pools.get(shape.group)
            if not shape.fits or key in seen or pool is None:
                continue
            if shape.tensor_parallel < 1 or pool.replicas_at(shape.tensor_parallel) < 1:
                continue
            seen.add(key)
            shapes.append((m, shape))
    order = sorted(range(len(shapes)), key=lambda i: (_rank_key(shapes[i][1]), i))
    rank = {i: position for position, i in enumerate(order)}
    index = {
        (demands[m].model, shape.group, shape.tensor_parallel): i
        for i, (m, shape) in enumerate(shapes)
    }
    keep = _keepable(problem, pools, index)
    candidates = tuple(
        Candidate(i, m, shape, rank[i], tuple(keep.get(i, ())), _capacities(shape))
        for i, (m, shape) in enumerate(shapes)
    )
    rates: list[dict[TrafficClass, float]] = []
    for demand in demands:
        per_class: dict[TrafficClass, float] = {}
        for item in demand.classes:
            if math.isfinite(item.rate_per_s) and item.rate_per_s > 0:
                per_class[item.traffic_class] = (
                    per_class.get(item.traffic_class, 0.0) + item.rate_per_s
                )
        rates.append(per_class)
    by_model = tuple(
        tuple(c.index for c in candidates if c.model == m) for m in range(len(demands))
    )
    by_pool = {group: tuple(c.index for c in candidates if c.group == group) for group in pools}
    return CostModel(problem, tuple(demands), tuple(rates), candidates, by_model, pools, by_pool)
