"""The local composition of the control plane: loopback Ray cluster + controller actor.

``LocalRuntime.start`` brings up the cluster and the controller; ``fleet_source`` is how the
gateway reads the endpoint table; ``stop`` stops the replicas, the controller and every Ray
process, in that order. Used by ``gearshift serve`` and the integration tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Mapping
from typing import Any

import ray
from ray.exceptions import RayError

from scheduler.config import GearshiftConfig
from scheduler.controlplane.controller import start_controller
from scheduler.controlplane.local_cluster import LocalCluster
from scheduler.errors import ControlPlaneError
from scheduler.framework.placement import ClassDemand
from scheduler.state import FleetState

_SHUTDOWN_TIMEOUT_S = 30.0


class RayFleetStateSource:
    """Reads the controller's published state (a background call, never per request)."""

    def __init__(self, controller: Any, timeout_s: float = 5.0) -> None:
        self._controller = controller
        self._timeout_s = timeout_s
        self._gateway_id = f"{socket.gethostname()}:{os.getpid()}"

    async def fetch(self) -> FleetState:
        try:
            state: FleetState = await asyncio.wait_for(
                self._controller.fleet_state.remote(), self._timeout_s
            )
        except (RayError, TimeoutError) as exc:
            raise ControlPlaneError(f"controller unreachable: {exc}") from exc
        return state

    async def report_demand(self, demand: Mapping[str, tuple[ClassDemand, ...]]) -> None:
        try:
            await asyncio.wait_for(
                self._controller.observe_demand.remote(self._gateway_id, dict(demand)),
                self._timeout_s,
            )
        except (RayError, TimeoutError) as exc:
            raise ControlPlaneError(f"controller unreachable: {exc}") from exc


class _ControllerOwner:
    """Starts the controller actor and stops it (and its replicas) again."""

    config: GearshiftConfig
    controller: Any = None

    def _start_controller(self) -> None:
        try:
            self.controller = start_controller(self.config)
            ray.get(self.controller.start.remote(), timeout=120)
        except ValueError as exc:  # Ray: the actor name is taken
            raise ControlPlaneError(
                f"a Gearshift controller already runs on this cluster ({exc})"
            ) from None

    def fleet_source(self) -> RayFleetStateSource:
        if self.controller is None:
            raise ControlPlaneError("the runtime is not started")
        return RayFleetStateSource(self.controller)

    def _stop_controller(self) -> None:
        if self.controller is not None and ray.is_initialized():
            # On failure the caller's cleanup (cluster shutdown) takes whatever is left.
            with contextlib.suppress(RayError):
                ray.get(self.controller.shutdown.remote(), timeout=_SHUTDOWN_TIMEOUT_S)
                ray.kill(self.controller)
        self.controller = None


class LocalRuntime(_ControllerOwner):
    """A loopback cluster of the config's nodes, started and stopped with the controller."""

    def __init__(self, config: GearshiftConfig) -> None:
        """Check the config against this machine (``ConfigError``); starts nothing."""
        self.cluster = LocalCluster(config)
        self.config = self.cluster.config

    def start(self) -> None:
        """Start the cluster and the controller, and run the first reconcile round."""
        try:
            self.cluster.start()
            self._start_controller()
        except (RayError, OSError, RuntimeError, ValueError, ControlPlaneError) as exc:
            self.stop()
            raise ControlPlaneError(f"the local control plane did not start: {exc}") from exc

    def stop(self) -> None:
        """Stop replicas gracefully, then the cluster. Safe to call twice."""
        self._stop_controller()
        self.cluster.stop()


class AttachedRuntime(_ControllerOwner):
    """An existing cluster (nodes joined with `gearshift node start`): only the controller is
    started here, and stopping takes only the controller and its replicas away."""

    def __init__(self, config: GearshiftConfig, address: str) -> None:
        self.config = config
        self.address = address

    def start(self) -> None:
        try:
            ray.init(address=self.address, namespace="gearshift", log_to_driver=False)
            self._start_controller()
        except (RayError, ConnectionError, RuntimeError) as exc:
            self.stop()
            raise ControlPlaneError(f"cannot use the cluster at {self.address}: {exc}") from exc

    def stop(self) -> None:
        self._stop_controller()
        if ray.is_initialized():
            ray.shutdown()
