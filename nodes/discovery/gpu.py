"""GPU discovery, the seam: what a probe reports about one GPU (``GpuInfo``), the ``GpuProbe``
Protocol, and ``FakeGpuProbe`` serving a fixed list.

``nodes.discovery.nvml`` reads real GPUs through NVML; ``nodes.discovery.gpu_catalog`` maps
what a probe reports to the accelerator catalog and summarises a node;
``nodes.discovery.fake_nvml`` builds realistic NVML data and a fake ``pynvml``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from scheduler.errors import GearshiftError

GIB = float(2**30)
# A catalog entry whose memory differs from NVML's total by more than this fraction gets a warning.
MEMORY_TOLERANCE = 0.10


class GpuProbeUnavailable(GearshiftError):
    """The GPU driver or its Python binding is missing or failed; callers treat the node as CPU."""


@dataclass(frozen=True, slots=True)
class GpuInfo:
    """One GPU as the driver reports it. ``name`` is NVML's product name, unaltered.

    ``nvlink_peers`` are the indices of GPUs this one has an active NVLink to, directly or
    through an NVSwitch; ``pci_bus_id`` is NVML's form, ``00000000:18:00.0``.
    """

    index: int
    uuid: str
    name: str
    memory_total_bytes: int
    memory_free_bytes: int
    compute_capability: tuple[int, int]
    mig_enabled: bool
    nvlink_peers: tuple[int, ...]
    pci_bus_id: str

    @property
    def memory_gib(self) -> float:
        """Total memory in GiB (2**30 bytes)."""
        return self.memory_total_bytes / GIB


class GpuProbe(Protocol):
    """Reads this node's GPUs. Every method raises GpuProbeUnavailable when it cannot."""

    def gpus(self) -> list[GpuInfo]:
        """Every GPU the driver sees, in index order; [] when the driver runs but sees none."""
        ...

    def driver_version(self) -> str | None:
        """The driver's version string, e.g. "550.127.05"; None when the probe cannot tell."""
        ...


class FakeGpuProbe(GpuProbe):
    """A probe that reports a fixed list of GPUs, or raises ``error`` when one is given."""

    def __init__(
        self,
        gpus: Sequence[GpuInfo],
        *,
        driver_version: str | None = "550.127.05",
        error: GpuProbeUnavailable | None = None,
    ) -> None:
        self._gpus = list(gpus)
        self._driver_version = driver_version
        self._error = error

    def gpus(self) -> list[GpuInfo]:
        if self._error is not None:
            raise self._error
        return list(self._gpus)

    def driver_version(self) -> str | None:
        if self._error is not None:
            raise self._error
        return self._driver_version
