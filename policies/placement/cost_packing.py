"""From replica counts per candidate to replicas on nodes.

Per pool, tensor-parallel degrees are packed largest first. At each degree the running replicas
the allocation keeps stay on their nodes, then new replicas go first-fit onto nodes in id order,
never into room a running replica still to be packed holds. When no node has room left, a new
replica may displace running ones (they move, and count against the disruption budget) on the
node where that displaces fewest. A replica that still finds no node is reported unpacked.
Deterministic: nodes, candidates and running replicas are visited in sorted order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from policies.placement.cost_model import Candidate, CostModel, Pool
from policies.placement.memory_best_fit import replica_id
from scheduler.framework.placement import NodeView, ReplicaAssignment


@dataclass(frozen=True, slots=True)
class Packing:
    assignments: tuple[ReplicaAssignment, ...]
    """Sorted by replica id."""
    placed: tuple[int, ...]
    """Per candidate: replicas that found a node (<= the allocation's count)."""
    moved: int
    """Running replicas moved to another node to make room."""
    free: dict[str, int]
    """Per pool (group): accelerators left free."""


@dataclass(slots=True)
class _Kept:
    candidate: Candidate
    assignment: ReplicaAssignment
    displaced: bool = False


class _PoolPacker:
    """Packs one pool. ``room`` is a node's free accelerators less those held for running
    replicas still to be packed (and not displaced)."""

    def __init__(self, pool: Pool, used_ids: set[str], moves_left: int | None) -> None:
        self.pool = pool
        self.used_ids = used_ids
        self.moves_left = moves_left
        self.nodes = {node.node_id: node for node in pool.nodes}
        self.order = [node.node_id for node in pool.nodes]
        self.free = {node.node_id: pool.slots(node) for node in pool.nodes}
        self.room = dict(self.free)
        self.pending: dict[str, list[_Kept]] = {node_id: [] for node_id in self.order}
        self.assignments: list[ReplicaAssignment] = []
        self.moved = 0
        self.cursor = 0
        """Nodes before it have no room at the degree being packed (first-fit)."""

    def hold(self, kept: _Kept) -> None:
        self.pending[kept.assignment.node_id].append(kept)
        self.room[kept.assignment.node_id] -= kept.candidate.tensor_parallel

    def start_degree(self) -> None:
        self.cursor = 0

    def place_kept(self, kept: _Kept) -> None:
        node = self.nodes[kept.assignment.node_id]
        self.pending[node.node_id].remove(kept)
        tp = kept.candidate.tensor_parallel
        self.free[node.node_id] -= tp
        self.assignments.append(
            ReplicaAssignment(
                kept.assignment.replica_id,
                kept.assignment.model,
                node.node_id,
                node.accelerator,
                tp,
                self.pool.price(node, tp),
            )
        )

    def place_new(self, candidate: Candidate) -> bool:
        tp = candidate.tensor_parallel
        while self.cursor < len(self.order) and self.room[self.order[self.cursor]] < tp:
            self.cursor += 1
        if self.cursor < len(self.order):
            target = self.nodes[self.order[self.cursor]]
        else:
            found = self._displace_for(tp)
            if found is None:
                return False
            target = found
        index = 0
        while replica_id(candidate.shape.model, target.node_id, index) in self.used_ids:
            index += 1
        rid = replica_id(candidate.shape.model, target.node_id, index)
        self.used_ids.add(rid)
        self.free[target.node_id] -= tp
        self.room[target.node_id] -= tp
        self.assignments.append(
            ReplicaAssignment(
                rid,
                candidate.shape.model,
                target.node_id,
                target.accelerator,
                tp,
                self.pool.price(target, tp),
            )
        )
        return True

    def _displace_for(self, tp: int) -> NodeView | None:
        """The node where making room for ``tp`` displaces fewest running replicas (within the
        move budget, then by node id), with those replicas marked displaced; None if none."""
        best: tuple[int, str, list[_Kept]] | None = None
        for node_id in self.order:
            if self.free[node_id] < tp:
                continue
            room = self.room[node_id]
            victims: list[_Kept] = []
            staying = sorted(
                (k for k in self.pending[node_id] if not k.displaced),
                key=lambda k: (-k.candidate.tensor_parallel, k.assignment.replica_id),
            )
            for kept in staying:
                if room >= tp:
                    break
                victims.append(kept)
                room += kept.candidate.tensor_parallel
            if self.moves_left is not None and len(victims) > self.moves_left:
                continue
            if best is None or len(victims) < best[0]:
                best = (len(victims), node_id, victims)
        if best is None:
            return None
        count, node_id, victims = best
        for kept in victims:
            kept.displaced = True
            self.room[node_id] += kept.candidate.tensor_parallel
        self.moved += count
        if self.moves_left is not None:
            self.moves_left -= count
        self.cursor = min(self.cursor, self.order.index(node_id))
        return self.nodes[node_id]


def pack(model: CostModel, replicas: Sequence[int]) -> Packing:
    """Place ``replicas[i]`` replicas of each candidate ``i`` on its pool's nodes."""
    problem = model.problem
    # Ids of replicas being dropped stay taken, so a replacement never reuses one.
    used_ids = {a.replica_id for a in problem.current}
    dropped = sum(max(0, len(c.current) - replicas[c.index]) for c in model.candidates)
    moves_left = (
        None if problem.max_disruptions is None else max(0, problem.max_disruptions - dropped)
    )
    placed = [0] * len(model.candidates)
    assignments: list[ReplicaAssignment] = []
    moved = 0
    free: dict[str, int] = {}
    for group, pool in model.pools.items():
        members = [model.candidates[i] for i in model.by_pool[group] if replicas[i] > 0]
        packer = _PoolPacker(pool, used_ids, moves_left)
        kept: list[_Kept] = []
        new = {c.index: replicas[c.index] for c in members}
        for candidate in members:
            for assignment in candidate.current[: replicas[candidate.index]]:
                item = _Kept(candidate, assignment)
                kept.append(item)
                packer.hold(item)
                new[candidate.index] -= 1
        for tp in sorted({c.tensor_parallel for c in members}, reverse=True):
            packer.start_degree()
            for item in kept:
                if item.candidate.tensor_parallel != tp:
                    continue
                if item.displaced:
                    packer.pending[item.assignment.node_id].remove(item)
                    new[item.candidate.index] += 1
                else:
                    packer.place_kept(item)
                    placed[item.candidate.index] += 1
            for candidate in (c for c in members if c.tensor_parallel == tp):
                for _ in range(new[candidate.index]):
                    if packer.place_new(candidate):
                        placed[candidate.index] += 1
        moves_left = packer.moves_left
        moved += packer.moved
        assignments.extend(packer.assignments)
        free[group] = sum(packer.free.values())
    return Packing(
        tuple(sorted(assignments, key=lambda a: a.replica_id)), tuple(placed), moved, free
    )
