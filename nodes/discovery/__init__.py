"""Hardware discovery on a node: which GPUs (via NVML) or CPUs it has, as catalog specs.

The fakes (``FakeGpuProbe``, ``FakeCpuProbe``, and ``nodes.discovery.fake_nvml`` for realistic
NVML data) are part of the public API: tests and demos hold them to the same Protocols.
"""

from nodes.discovery.cpu import (
    CpuInfo,
    CpuProbe,
    FakeCpuProbe,
    LinuxCpuProbe,
    cpu_accelerator_for,
    cpu_info_from_proc,
    vllm_cpu_support,
)
from nodes.discovery.gpu import FakeGpuProbe, GpuInfo, GpuProbe, GpuProbeUnavailable
from nodes.discovery.gpu_catalog import (
    NodeHardware,
    catalog_entry,
    derived_spec,
    describe_gpus,
    nvlink_islands,
    ray_accelerator_type,
)
from nodes.discovery.nvml import NvmlGpuProbe

__all__ = [
    "CpuInfo",
    "CpuProbe",
    "FakeCpuProbe",
    "FakeGpuProbe",
    "GpuInfo",
    "GpuProbe",
    "GpuProbeUnavailable",
    "LinuxCpuProbe",
    "NodeHardware",
    "NvmlGpuProbe",
    "catalog_entry",
    "cpu_accelerator_for",
    "cpu_info_from_proc",
    "derived_spec",
    "describe_gpus",
    "nvlink_islands",
    "ray_accelerator_type",
    "vllm_cpu_support",
]
