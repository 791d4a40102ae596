"""Resolve `simulated: false` node groups of a local (one-machine) fleet to this machine.

On `gearshift serve` every node is a Ray node on this machine. A simulated group declares
hardware it does not have; a real one is this machine itself, so it may have one node, its
CPU shape comes from the CPU probe, and its GPUs must be the ones NVML reports.
"""

from __future__ import annotations

from nodes.discovery.cpu import CpuProbe
from nodes.discovery.gpu import GpuProbe, GpuProbeUnavailable
from nodes.discovery.gpu_catalog import describe_gpus
from scheduler.config import CpuSpec, GearshiftConfig, NodeGroup
from scheduler.errors import ConfigError

_GIB = 1024**3


def resolve_local_hardware(
    config: GearshiftConfig, cpu_probe: CpuProbe, gpu_probe: GpuProbe
) -> GearshiftConfig:
    """``config`` with every real group checked against (and filled from) this machine."""
    real = [group for group in config.fleet.node_groups if not group.simulated]
    if not real:
        return config
    if sum(group.nodes for group in real) > 1:
        names = ", ".join(group.name for group in real)
        raise ConfigError(
            f"node groups {names} are `simulated: false` with more than one node in all: on one "
            "machine only this machine is real; other machines join with `gearshift node start`"
        )
    groups = [_resolve(group, cpu_probe, gpu_probe) if not group.simulated else group
              for group in config.fleet.node_groups]  # fmt: skip
    data = config.model_dump(mode="json")
    data["fleet"]["node_groups"] = [group.model_dump(mode="json") for group in groups]
    return GearshiftConfig.model_validate(data)


def _resolve(group: NodeGroup, cpu_probe: CpuProbe, gpu_probe: GpuProbe) -> NodeGroup:
    if group.is_cpu:
        if group.cpu is not None:
            return group
        info = cpu_probe.cpu()
        cpu = CpuSpec(cores=info.usable_cores, memory_gib=round(info.usable_memory_bytes / _GIB, 1))
        return group.model_copy(update={"cpu": cpu})
    try:
        hardware = describe_gpus(gpu_probe)
    except GpuProbeUnavailable as exc:
        raise ConfigError(
            f"node group {group.name} wants real {group.accelerator}: {exc}"
        ) from None
    if hardware is None or hardware.accelerator.name != group.accelerator:
        found = f"{hardware.count} × {hardware.accelerator.name}" if hardware else "no GPU"
        raise ConfigError(
            f"node group {group.name} wants real {group.accelerator} GPUs; this machine has {found}"
        )
    if hardware.count < group.accelerators_per_node:
        raise ConfigError(
            f"node group {group.name} wants {group.accelerators_per_node} × {group.accelerator}; "
            f"this machine has {hardware.count}"
        )
    return group
