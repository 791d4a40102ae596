"""Joining a machine to a Gearshift cluster: what it declares, and the `ray start` that does it.

The declaration comes from the probes (NVML for GPUs, /proc for CPUs), the catalog and the
operator's overrides (price, ownership, labels, group); the same ``declare_node`` as simulated
nodes, so the controller cannot tell a joined node from a configured one.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from nodes.discovery.cpu import CpuProbe, cpu_accelerator_for
from nodes.discovery.gpu import GpuProbe, GpuProbeUnavailable
from nodes.discovery.gpu_catalog import describe_gpus
from scheduler.errors import ConfigError
from scheduler.inventory import ROLE_HEAD, ROLE_WORKER, NodeDeclaration, declare_node
from scheduler.types import Ownership

_LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


@dataclass(frozen=True, slots=True)
class JoinRequest:
    """What the operator asked for (`gearshift node start` flags)."""

    head: bool
    address: str | None = None
    port: int = 6379
    node_ip_address: str | None = None
    node_id: str | None = None
    group: str | None = None
    price_per_hour: float | None = None
    ownership: Ownership = Ownership.ON_DEMAND
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class JoinPlan:
    declaration: NodeDeclaration
    ray_argv: list[str]
    env: dict[str, str]
    warnings: list[str]


def parse_labels(text: str) -> dict[str, str]:
    """``k=v,k2=v2`` → dict, with Kubernetes-style key/value syntax checked."""
    labels: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not _LABEL_KEY.match(key) or not _LABEL_VALUE.match(value):
            raise ConfigError(f"bad label `{item}`: expected key=value with label-safe characters")
        if key.startswith(("gearshift.io/", "ray.io/")):
            raise ConfigError(f"label `{key}` is reserved: Gearshift and Ray set it")
        labels[key] = value
    return labels


def plan_join(
    request: JoinRequest, gpu_probe: GpuProbe, cpu_probe: CpuProbe, ray_bin: Path
) -> JoinPlan:
    """The node's declaration and the `ray start` command line; starts nothing."""
    if request.head == (request.address is not None):
        raise ConfigError("give exactly one of --head and --address HOST:PORT")
    warnings: list[str] = []
    node_id = _slug(request.node_id or socket.gethostname())
    try:
        hardware = None if request.head else describe_gpus(gpu_probe)
    except GpuProbeUnavailable as exc:
        hardware = None
        warnings.append(f"no GPUs used: {exc}")
    if hardware is not None:
        spec, count = hardware.accelerator, hardware.count
        warnings += hardware.warnings
        if not spec.calibrated and request.price_per_hour is None:
            warnings.append(f"{spec.name} has no catalog price: set --price (dollars per hour)")
    else:
        spec, count = cpu_accelerator_for(cpu_probe.cpu()), 1
    price = request.price_per_hour
    if price is None:
        price = spec.default_price_per_hour * (count if hardware is not None else 1)
    group = _slug(request.group or (f"{spec.name}-x{count}" if hardware else "cpu"))
    declaration = declare_node(
        node_id,
        group,
        spec,
        count if hardware is not None else 1,
        price,
        request.ownership,
        simulated=False,
        labels=request.labels,
        role=ROLE_HEAD if request.head else ROLE_WORKER,
    )
    return JoinPlan(declaration, _ray_argv(request, declaration, ray_bin), _env(request), warnings)


def _ray_argv(request: JoinRequest, declaration: NodeDeclaration, ray_bin: Path) -> list[str]:
    argv = [str(ray_bin), "start", "--disable-usage-stats"]
    if request.head:
        # The head runs the controller only: replicas go to worker nodes.
        argv += ["--head", "--port", str(request.port), "--include-dashboard=false",
                 "--num-gpus", "0"]  # fmt: skip
    else:
        assert request.address is not None
        argv += ["--address", request.address, "--num-gpus", str(declaration.num_gpus)]
    if request.node_ip_address:
        argv += ["--node-ip-address", request.node_ip_address]
    resources = {} if request.head else declaration.resources
    if resources:
        argv += ["--resources", json.dumps(resources, separators=(",", ":"))]
    argv += ["--labels", ",".join(f"{k}={v}" for k, v in sorted(declaration.labels.items()))]
    return argv


def _env(request: JoinRequest) -> dict[str, str]:
    # `ray start` joins real clusters only with multi-node clusters enabled (Ray's default on
    # Linux); a loopback setting inherited from a `gearshift serve` shell must not leak in.
    return {"RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1"}


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9.\-]+", "-", text.lower()).strip("-.")
    if not slug:
        raise ConfigError(f"cannot make a node id or group name out of `{text}`")
    return slug[:63]
