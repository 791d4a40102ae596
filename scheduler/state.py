"""What the control plane publishes: the endpoint table and replica status, as plain values.

The controller produces a ``FleetState`` every reconcile round; gateways read it (never on the
request path) and the admin API renders it for ``gearshift status``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from scheduler.framework.placement import Coverage
from scheduler.framework.plugin import Rejection
from scheduler.framework.routing import EndpointView


@dataclass(frozen=True, slots=True)
class ReplicaStatus:
    """One replica for operators: where it runs, what it costs, how it is doing."""

    replica_id: str
    model: str
    node_id: str
    accelerator: str
    tensor_parallel: int
    engine: str
    state: str
    url: str | None
    price_per_hour: float
    restarts: int = 0
    detail: str = ""
    """Why it is not ready (exit code, last log lines), empty when healthy."""
    placed_on: str = ""
    """The node Ray actually put the replica actor on (should equal ``node_id``)."""
    pid: int = 0
    """Process id of the replica actor (on its node)."""
    engine_pid: int = 0
    log_tail: str = ""
    """The engine's last log lines (bounded)."""
    last_failure: str = ""
    """Why this replica id last failed, if it ever did (kept across restarts)."""


@dataclass(frozen=True, slots=True)
class NodeStatus:
    node_id: str
    group: str
    accelerator: str
    accelerator_count: int
    accelerators_used: int
    accelerator_memory_gib: float
    price_per_hour: float
    ownership: str
    alive: bool
    labels: dict[str, str] = field(default_factory=dict)
    """The operator's own labels (Gearshift's and Ray's are shown as columns instead)."""

    @property
    def free_memory_gib(self) -> float:
        return round(
            (self.accelerator_count - self.accelerators_used) * self.accelerator_memory_gib, 1
        )


@dataclass(frozen=True, slots=True)
class FleetState:
    """A consistent snapshot published by the controller."""

    version: int
    endpoints: tuple[EndpointView, ...] = ()
    replicas: tuple[ReplicaStatus, ...] = ()
    nodes: tuple[NodeStatus, ...] = ()
    unplaced: tuple[Rejection, ...] = ()
    planned_replicas: int = 0
    models: tuple[str, ...] = field(default_factory=tuple)
    demand: tuple[Coverage, ...] = ()
    """The last plan's demand per model and class (configured floor or observed, the larger)
    against the capacity it planned."""
    plan_notes: tuple[str, ...] = ()

    @property
    def cost_per_hour(self) -> float:
        return sum(replica.price_per_hour for replica in self.replicas)

    @property
    def ready(self) -> bool:
        """Every planned replica is serving."""
        serving = sum(1 for replica in self.replicas if replica.state == "ready")
        return self.planned_replicas > 0 and serving >= self.planned_replicas

    def status_document(self) -> dict[str, Any]:
        """The JSON the admin API serves for ``gearshift status``."""
        return {
            "version": self.version,
            "ready": self.ready,
            "cost_per_hour": round(self.cost_per_hour, 4),
            "models": list(self.models),
            "replicas": [asdict(replica) for replica in self.replicas],
            "nodes": [
                {**asdict(node), "free_memory_gib": node.free_memory_gib} for node in self.nodes
            ],
            "unplaced": [
                {"model": r.subject, "verdict": r.verdict.value, "reason": r.reason}
                for r in self.unplaced
            ],
            "demand": [
                {
                    "model": c.model,
                    "class": c.traffic_class.value,
                    "demand_per_s": round(c.demand_per_s, 4),
                    "planned_per_s": round(c.served_per_s, 4),
                }
                for c in self.demand
            ],
            "plan_notes": list(self.plan_notes),
        }
