"""Decision objects the reconciler emits and the actuator carries out."""

from __future__ import annotations

from dataclasses import dataclass

from scheduler.framework.placement import ReplicaAssignment


@dataclass(frozen=True, slots=True)
class StartReplica:
    assignment: ReplicaAssignment


@dataclass(frozen=True, slots=True)
class StopReplica:
    replica_id: str
    reason: str


Action = StartReplica | StopReplica
