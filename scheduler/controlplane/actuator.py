"""The actuator: the only code that starts, probes, drains and stops replica actors via Ray.

It turns ``StartReplica``/``StopReplica`` decisions into Ray calls. A replica actor is pinned
to its node by label selector and holds ``GPU`` = its TP degree (or a CPU engine slot). For
TP > 1 the GPUs are first reserved together by a ``STRICT_PACK`` placement group on that node,
and the actor runs inside it: one process tree (vLLM's multiprocessing executor) sees all of
them through ``CUDA_VISIBLE_DEVICES``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayError
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from nodes.engines.launch import EngineSpec
from scheduler.controlplane.replica import ReplicaActor, ReplicaHealth
from scheduler.framework.placement import ReplicaAssignment
from scheduler.inventory import CPU_SLOT_RESOURCE
from scheduler.types import LABEL_NODE_ID, ReplicaState

log = logging.getLogger(__name__)

_RemoteReplica = ray.remote(ReplicaActor)


@dataclass(frozen=True, slots=True)
class ReplicaHandle:
    """A started replica: its actor, and the placement group reserving its GPUs (TP > 1)."""

    actor: Any
    placement_group: Any = None


class RayActuator:
    """Start, probe, drain and stop replica actors."""

    def start(self, assignment: ReplicaAssignment, spec: EngineSpec, on_gpu: bool) -> ReplicaHandle:
        """Create the replica actor on ``assignment.node_id``; returns at once."""
        pin = {LABEL_NODE_ID: assignment.node_id}
        options: dict[str, Any] = {"num_cpus": 0, "max_restarts": 0}
        if not on_gpu:
            options |= {"resources": {CPU_SLOT_RESOURCE: 1.0}, "label_selector": pin}
            return ReplicaHandle(
                _RemoteReplica.options(**options).remote(assignment.replica_id, spec)
            )
        options["num_gpus"] = assignment.tensor_parallel
        if assignment.tensor_parallel == 1:
            options["label_selector"] = pin
            return ReplicaHandle(
                _RemoteReplica.options(**options).remote(assignment.replica_id, spec)
            )
        group = placement_group(
            [{"GPU": float(assignment.tensor_parallel)}],
            strategy="STRICT_PACK",
            name=f"gearshift:{assignment.replica_id}",
            bundle_label_selector=[pin],
        )
        options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
            placement_group=group,
            placement_group_bundle_index=0,
            placement_group_capture_child_tasks=True,
        )
        actor = _RemoteReplica.options(**options).remote(assignment.replica_id, spec)
        return ReplicaHandle(actor, group)

    async def probe(self, handle: ReplicaHandle, timeout_s: float) -> ReplicaHealth | None:
        """The replica's health; FAILED when the actor is gone; None when it did not answer
        in time (a busy or not-yet-scheduled actor is not a dead one: the caller keeps the
        last known state and applies its own start deadline)."""
        try:
            health: ReplicaHealth = await asyncio.wait_for(handle.actor.health.remote(), timeout_s)
            return health
        except RayActorError as exc:
            return ReplicaHealth(ReplicaState.FAILED, "", f"replica actor died: {_first_line(exc)}")
        except (TimeoutError, GetTimeoutError):
            return None
        except RayError as exc:
            return ReplicaHealth(
                ReplicaState.FAILED, "", f"replica actor error: {_first_line(exc)}"
            )

    async def drain(self, handle: ReplicaHandle, timeout_s: float) -> None:
        """Let in-flight requests finish (up to ``timeout_s``), then stop engine and actor."""
        try:
            await asyncio.wait_for(handle.actor.drain.remote(timeout_s), timeout_s + 15)
        except (RayError, TimeoutError) as exc:
            log.info("replica drain: %s", _first_line(exc))
        self._release(handle)

    async def stop(self, handle: ReplicaHandle, timeout_s: float) -> None:
        """Stop the engine gracefully, then the actor. Never raises: a dead actor is stopped."""
        try:
            await asyncio.wait_for(handle.actor.stop.remote(timeout_s), timeout_s + 5)
        except (RayError, TimeoutError) as exc:
            log.info("replica stop: %s", _first_line(exc))
        self._release(handle)

    @staticmethod
    def _release(handle: ReplicaHandle) -> None:
        ray.kill(handle.actor, no_restart=True)
        if handle.placement_group is not None:
            with contextlib.suppress(RayError, ValueError):
                remove_placement_group(handle.placement_group)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
