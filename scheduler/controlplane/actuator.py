"""The actuator: the only code that starts, probes and stops replica actors through Ray.

It turns ``StartReplica``/``StopReplica`` decisions into Ray calls: a replica actor pinned to
its node by label selector, holding ``GPU`` = its TP degree (or a CPU engine slot).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayError

from nodes.engines.launch import EngineSpec
from scheduler.controlplane.replica import ReplicaActor, ReplicaHealth
from scheduler.framework.placement import ReplicaAssignment
from scheduler.inventory import CPU_SLOT_RESOURCE
from scheduler.types import LABEL_NODE_ID, ReplicaState

log = logging.getLogger(__name__)

_RemoteReplica = ray.remote(ReplicaActor)


class RayActuator:
    """Start, probe and stop replica actors."""

    def start(self, assignment: ReplicaAssignment, spec: EngineSpec, on_gpu: bool) -> Any:
        """Create the replica actor on ``assignment.node_id``; returns its handle at once."""
        options: dict[str, Any] = {
            "num_cpus": 0,
            "max_restarts": 0,
            "label_selector": {LABEL_NODE_ID: assignment.node_id},
        }
        if on_gpu:
            options["num_gpus"] = assignment.tensor_parallel
        else:
            options["resources"] = {CPU_SLOT_RESOURCE: 1.0}
        return _RemoteReplica.options(**options).remote(assignment.replica_id, spec)

    async def probe(self, handle: Any, timeout_s: float) -> ReplicaHealth | None:
        """The replica's health; FAILED when the actor is gone; None when it did not answer
        in time (a busy actor is not a dead one: the caller keeps the last known state)."""
        try:
            health: ReplicaHealth = await asyncio.wait_for(handle.health.remote(), timeout_s)
            return health
        except RayActorError as exc:
            return ReplicaHealth(ReplicaState.FAILED, "", f"replica actor died: {_first_line(exc)}")
        except (TimeoutError, GetTimeoutError):
            return None
        except RayError as exc:
            return ReplicaHealth(
                ReplicaState.FAILED, "", f"replica actor error: {_first_line(exc)}"
            )

    async def stop(self, handle: Any, timeout_s: float) -> None:
        """Stop the engine gracefully, then the actor. Never raises: a dead actor is stopped."""
        try:
            await asyncio.wait_for(handle.stop.remote(timeout_s), timeout_s + 5)
        except (RayError, TimeoutError) as exc:
            log.info("replica stop: %s", _first_line(exc))
        ray.kill(handle, no_restart=True)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
