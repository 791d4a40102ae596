"""A Ray cluster on this machine's loopback, one Ray node per configured (simulated) node.

Used by ``gearshift serve`` and the integration tests. Every node binds 127.0.0.1 and
declares its accelerators, resources and labels as ``scheduler.inventory`` computes them
(the entry point calls ``prepare_loopback_ray`` before Ray is imported).
"""

from __future__ import annotations

import ray
from ray.cluster_utils import Cluster

from nodes.discovery.cpu import LinuxCpuProbe
from nodes.discovery.nvml import NvmlGpuProbe
from scheduler.config import GearshiftConfig
from scheduler.controlplane.local_hardware import resolve_local_hardware
from scheduler.errors import ControlPlaneError
from scheduler.inventory import ROLE_HEAD, NodeDeclaration, declare_fleet
from scheduler.types import LABEL_ROLE

LOOPBACK = "127.0.0.1"
_OBJECT_STORE_BYTES = 80 * 1024 * 1024


class LocalCluster:
    """Start, connect to and stop a loopback Ray cluster for a config's fleet."""

    def __init__(self, config: GearshiftConfig) -> None:
        self.config = resolve_local_hardware(config, LinuxCpuProbe(), NvmlGpuProbe())
        self._declarations = declare_fleet(self.config)
        self._cluster: Cluster | None = None

    @property
    def address(self) -> str:
        if self._cluster is None:
            raise ControlPlaneError("the local cluster is not running")
        address: str = self._cluster.address
        return address

    def start(self) -> None:
        """Start the head and every node, then connect this process as the driver."""
        cluster = Cluster(
            initialize_head=True,
            head_node_args={
                "num_cpus": 1,
                "num_gpus": 0,
                "node_ip_address": LOOPBACK,
                "include_dashboard": False,
                "object_store_memory": _OBJECT_STORE_BYTES,
                "labels": {LABEL_ROLE: ROLE_HEAD},
            },
        )
        self._cluster = cluster
        try:
            for declaration in self._declarations:
                cluster.add_node(wait=False, **_node_args(declaration))
            cluster.wait_for_nodes()
            ray.init(address=cluster.address, log_to_driver=False, namespace="gearshift")
        except Exception:
            self.stop()
            raise

    def stop(self) -> None:
        """Disconnect and stop every Ray process this cluster started. Idempotent."""
        if ray.is_initialized():
            ray.shutdown()
        if self._cluster is not None:
            self._cluster.shutdown()
            self._cluster = None


def _node_args(declaration: NodeDeclaration) -> dict[str, object]:
    return {
        "num_cpus": declaration.num_cpus,
        "num_gpus": declaration.num_gpus,
        "resources": declaration.resources,
        "labels": declaration.labels,
        "node_ip_address": LOOPBACK,
        "object_store_memory": _OBJECT_STORE_BYTES,
    }
