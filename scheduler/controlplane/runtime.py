"""The local composition of the control plane: loopback Ray cluster + controller actor.

``LocalRuntime.start`` brings up the cluster and the controller; ``fleet_source`` is how the
gateway reads the endpoint table; ``stop`` stops the replicas, the controller and every Ray
process, in that order. Used by ``gearshift serve`` and the integration tests.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import ray
from ray.exceptions import RayError

from scheduler.config import GearshiftConfig
from scheduler.controlplane.controller import start_controller
from scheduler.controlplane.local_cluster import LocalCluster
from scheduler.errors import ControlPlaneError
from scheduler.state import FleetState

_SHUTDOWN_TIMEOUT_S = 30.0


class RayFleetStateSource:
    """Reads the controller's published state (a background call, never per request)."""

    def __init__(self, controller: Any, timeout_s: float = 5.0) -> None:
        self._controller = controller
        self._timeout_s = timeout_s

    async def fetch(self) -> FleetState:
        try:
            state: FleetState = await asyncio.wait_for(
                self._controller.fleet_state.remote(), self._timeout_s
            )
        except (RayError, TimeoutError) as exc:
            raise ControlPlaneError(f"controller unreachable: {exc}") from exc
        return state


class LocalRuntime:
    def __init__(self, config: GearshiftConfig) -> None:
        """Check the config against this machine (``ConfigError``); starts nothing."""
        self.cluster = LocalCluster(config)
        self.config = self.cluster.config
        self.controller: Any = None

    def start(self) -> None:
        """Start the cluster and the controller, and run the first reconcile round."""
        try:
            self.cluster.start()
            self.controller = start_controller(self.config)
            ray.get(self.controller.start.remote(), timeout=120)
        except (RayError, OSError, RuntimeError, ValueError) as exc:
            self.stop()
            raise ControlPlaneError(f"the local control plane did not start: {exc}") from exc

    def fleet_source(self) -> RayFleetStateSource:
        if self.controller is None:
            raise ControlPlaneError("the runtime is not started")
        return RayFleetStateSource(self.controller)

    def fleet_state(self, timeout_s: float = 10.0) -> FleetState:
        state: FleetState = ray.get(self.controller.fleet_state.remote(), timeout=timeout_s)
        return state

    def stop(self) -> None:
        """Stop replicas gracefully, then the cluster. Safe to call twice."""
        if self.controller is not None and ray.is_initialized():
            # On failure the cluster shutdown below kills whatever is left.
            with contextlib.suppress(RayError):
                ray.get(self.controller.shutdown.remote(), timeout=_SHUTDOWN_TIMEOUT_S)
            self.controller = None
        self.cluster.stop()
