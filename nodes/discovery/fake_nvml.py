"""Realistic NVML data for tests and demos: every catalog GPU as the driver names and sizes it.

``CARDS`` holds the product name, memory total and compute capability NVML reports for each
catalog GPU; ``fake_gpu`` / ``fake_node`` and the named nodes build ``GpuInfo`` lists from them
for ``FakeGpuProbe``. ``FakeNvml`` goes one layer down: it serves the same GPUs through the
``pynvml`` calls ``NvmlGpuProbe`` makes, NVSwitch topology and NotSupported errors included, so
the real probe's parsing runs without a GPU.

Names are NVML's ``nvmlDeviceGetName``; memory totals are what ``nvidia-smi`` prints as "Total"
on common cloud instances, in MiB. Entries marked [U] are recalled, not checked against a card.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from nodes.discovery.gpu import GpuInfo
from nodes.discovery.nvml import NvmlGpuProbe

MIB = 2**20


@dataclass(frozen=True, slots=True)
class NvmlCard:
    """One GPU model as NVML reports it."""

    name: str
    memory_mib: int
    compute_capability: tuple[int, int]


# Every NVIDIA GPU of the catalog, keyed by a short id; several ids may map to one entry.
CARDS: Mapping[str, NvmlCard] = MappingProxyType(
    {
        "a100-sxm4-40gb": NvmlCard("NVIDIA A100-SXM4-40GB", 40960, (8, 0)),
        "a100-pcie-40gb": NvmlCard("NVIDIA A100-PCIE-40GB", 40960, (8, 0)),
        "a100-sxm4-80gb": NvmlCard("NVIDIA A100-SXM4-80GB", 81920, (8, 0)),
        "a100-80gb-pcie": NvmlCard("NVIDIA A100 80GB PCIe", 81920, (8, 0)),
        "h100-sxm": NvmlCard("NVIDIA H100 80GB HBM3", 81559, (9, 0)),
        "h100-pcie": NvmlCard("NVIDIA H100 PCIe", 81559, (9, 0)),
        "h200": NvmlCard("NVIDIA H200", 143771, (9, 0)),
        "b200": NvmlCard("NVIDIA B200", 183359, (10, 0)),
        "l40s": NvmlCard("NVIDIA L40S", 46068, (8, 9)),
        "l4": NvmlCard("NVIDIA L4", 23034, (8, 9)),
        "a10g": NvmlCard("NVIDIA A10G", 23028, (8, 6)),
        "t4": NvmlCard("Tesla T4", 15360, (7, 5)),
        "v100-sxm2-16gb": NvmlCard("Tesla V100-SXM2-16GB", 16160, (7, 0)),  # [U]
        "v100-sxm2-32gb": NvmlCard("Tesla V100-SXM2-32GB", 32510, (7, 0)),  # [U]
        "rtx-4090": NvmlCard("NVIDIA GeForce RTX 4090", 24564, (8, 9)),
    }
)

# Cards the catalog lacks; ``catalog_entry`` derives a spec for them.
UNLISTED_CARDS: Mapping[str, NvmlCard] = MappingProxyType(
    {
        "rtx-a6000": NvmlCard("NVIDIA RTX A6000", 49140, (8, 6)),
        "h20": NvmlCard("NVIDIA H20", 97871, (9, 0)),  # [U]
        "h100-nvl": NvmlCard("NVIDIA H100 NVL", 95830, (9, 0)),  # [U]
        "rtx-5090": NvmlCard("NVIDIA GeForce RTX 5090", 32607, (12, 0)),  # [U]
    }
)

# NVML cannot see AMD cards. This is the product name amd-smi reports, for testing the name
# mapping; (9, 4) stands for the gfx942 ISA, not a CUDA capability.
AMD_CARDS: Mapping[str, NvmlCard] = MappingProxyType(
    {
        "mi300x": NvmlCard("AMD Instinct MI300X", 196592, (9, 4)),  # [U]
    }
)

# PCI bus numbers of the eight GPUs on an HGX H100 board, as nvidia-smi lists them [U].
_HGX_BUSES = (0x18, 0x2A, 0x3A, 0x5D, 0x9A, 0xAB, 0xBA, 0xDB)

Topology = Literal["none", "mesh", "pairs"]


def _card(card: str | NvmlCard) -> NvmlCard:
    if isinstance(card, NvmlCard):
        return card
    for table in (CARDS, UNLISTED_CARDS, AMD_CARDS):
        if card in table:
            return table[card]
    raise KeyError(f"no fake card {card!r}")


def fake_gpu(
    card: str | NvmlCard,
    index: int = 0,
    *,
    nvlink_peers: Iterable[int] = (),
    mig_enabled: bool = False,
    used_mib: int = 0,
) -> GpuInfo:
    """GPU ``index`` of model ``card`` (a key of a card table, or an NvmlCard)."""
    model = _card(card)
    bus = _HGX_BUSES[index] if index < len(_HGX_BUSES) else 0x10 + index
    return GpuInfo(
        index=index,
        uuid=f"GPU-{uuid.uuid5(uuid.NAMESPACE_DNS, f'{model.name}/{index}.gearshift.test')}",
        name=model.name,
        memory_total_bytes=model.memory_mib * MIB,
        memory_free_bytes=(model.memory_mib - used_mib) * MIB,
        compute_capability=model.compute_capability,
        mig_enabled=mig_enabled,
        nvlink_peers=tuple(sorted(set(nvlink_peers) - {index})),
        pci_bus_id=f"00000000:{bus:02X}:00.0",
    )


def fake_node(card: str | NvmlCard, count: int, *, nvlink: Topology = "none") -> list[GpuInfo]:
    """``count`` GPUs of one model; NVLink as a full mesh, in pairs (0-1, 2-3, ...) or none."""

    def peers(index: int) -> Iterable[int]:
        if nvlink == "mesh":
            return range(count)
        if nvlink == "pairs":
            return [index ^ 1] if index ^ 1 < count else []
        return []

    return [fake_gpu(card, i, nvlink_peers=peers(i)) for i in range(count)]


def hgx_h100_node() -> list[GpuInfo]:
    """An 8x H100 SXM (HGX) node: every GPU reaches every other through the NVSwitches."""
    return fake_node("h100-sxm", 8, nvlink="mesh")


def l4_node() -> list[GpuInfo]:
    """A 4x L4 node (AWS g6.12xlarge-like): PCIe only, no NVLink."""
    return fake_node("l4", 4)


def bridged_a100_pcie_node() -> list[GpuInfo]:
    """4x A100 80GB PCIe with NVLink bridges joining GPUs 0-1 and 2-3."""
    return fake_node("a100-80gb-pcie", 4, nvlink="pairs")


def mig_a100_node() -> list[GpuInfo]:
    """One A100-SXM4-40GB with MIG enabled."""
    return [fake_gpu("a100-sxm4-40gb", 0, mig_enabled=True)]


# --- a fake pynvml ---------------------------------------------------------------------------


class FakeNvmlError(Exception):
    """Base of the fake NVML errors, like ``pynvml.NVMLError``."""


class FakeNvmlNotSupported(FakeNvmlError):
    """Like ``pynvml.NVMLError_NotSupported``."""


class FakeNvmlInvalidArgument(FakeNvmlError):
    """Like ``pynvml.NVMLError_InvalidArgument`` (e.g. a link number past the card's last)."""


class FakeNvmlFunctionNotFound(FakeNvmlError):
    """Like ``pynvml.NVMLError_FunctionNotFound`` (an older driver)."""


class FakeNvmlLibraryNotFound(FakeNvmlError):
    """Like ``pynvml.NVMLError_LibraryNotFound``: no libnvidia-ml.so.1, i.e. no driver."""


@dataclass(frozen=True, slots=True)
class _Memory:
    total: int
    free: int


@dataclass(frozen=True, slots=True)
class _PciInfo:
    busId: str


# NVSwitch PCI addresses of an HGX H100 board (four NVSwitch chips) [U].
_SWITCH_BUSES = ("00000000:C1:00.0", "00000000:C2:00.0", "00000000:C3:00.0", "00000000:C4:00.0")
_LINKS = 18  # NVLink ports on an H100; A100 has 12, V100 6.


class FakeNvml:
    """A stand-in for the ``pynvml`` module that serves ``gpus``.

    GPUs without peers raise NotSupported for every NVLink query. With ``nvswitch`` each GPU
    that has peers sends all its links to four NVSwitches (so peers must form a full mesh);
    without it each peer gets two direct links. ``init_error`` makes ``nvmlInit`` fail;
    ``sessions`` counts open sessions, so tests can check that every init was shut down.
    """

    NVMLError: type[Exception] = FakeNvmlError
    NVMLError_NotSupported: type[Exception] = FakeNvmlNotSupported
    NVMLError_InvalidArgument: type[Exception] = FakeNvmlInvalidArgument
    NVMLError_FunctionNotFound: type[Exception] = FakeNvmlFunctionNotFound
    NVML_NVLINK_MAX_LINKS: int = 36
    NVML_FEATURE_ENABLED: int = 1
    NVML_DEVICE_MIG_ENABLE: int = 1

    def __init__(
        self,
        gpus: Sequence[GpuInfo],
        *,
        driver_version: str = "550.127.05",
        nvswitch: bool = False,
        init_error: FakeNvmlError | None = None,
    ) -> None:
        self._gpus = sorted(gpus, key=lambda gpu: gpu.index)
        self._driver = driver_version
        self._init_error = init_error
        self.sessions = 0
        by_index = {gpu.index: gpu for gpu in self._gpus}
        self._links: list[list[str]] = []
        for gpu in self._gpus:
            if nvswitch and gpu.nvlink_peers:
                links = [_SWITCH_BUSES[link % len(_SWITCH_BUSES)] for link in range(_LINKS)]
            else:
                links = [by_index[p].pci_bus_id for p in gpu.nvlink_peers for _ in range(2)]
            self._links.append(links)

    def nvmlInit(self) -> None:
        if self._init_error is not None:
            raise self._init_error
        self.sessions += 1

    def nvmlShutdown(self) -> None:
        if self.sessions <= 0:
            raise FakeNvmlError("Uninitialized")
        self.sessions -= 1

    def nvmlSystemGetDriverVersion(self) -> str:
        self._require_session()
        return self._driver

    def nvmlDeviceGetCount(self) -> int:
        self._require_session()
        return len(self._gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> object:
        self._require_session()
        if not 0 <= index < len(self._gpus):
            raise FakeNvmlInvalidArgument("Invalid Argument")
        return index

    def nvmlDeviceGetName(self, handle: object) -> bytes:
        return self._gpu(handle).name.encode()  # older pynvml returns bytes

    def nvmlDeviceGetUUID(self, handle: object) -> str:
        return self._gpu(handle).uuid

    def nvmlDeviceGetMemoryInfo(self, handle: object) -> _Memory:
        gpu = self._gpu(handle)
        return _Memory(total=gpu.memory_total_bytes, free=gpu.memory_free_bytes)

    def nvmlDeviceGetCudaComputeCapability(self, handle: object) -> tuple[int, int]:
        return self._gpu(handle).compute_capability

    def nvmlDeviceGetMigMode(self, handle: object) -> list[int]:
        gpu = self._gpu(handle)
        if gpu.mig_enabled:
            return [1, 1]
        if gpu.compute_capability in ((8, 0), (9, 0), (10, 0)):
            return [0, 0]
        raise FakeNvmlNotSupported("Not Supported")

    def nvmlDeviceGetPciInfo(self, handle: object) -> _PciInfo:
        return _PciInfo(busId=self._gpu(handle).pci_bus_id)

    def nvmlDeviceGetNvLinkState(self, handle: object, link: int) -> int:
        return 1 if link < len(self._nvlinks(handle, link)) else 0

    def nvmlDeviceGetNvLinkRemotePciInfo(self, handle: object, link: int) -> _PciInfo:
        links = self._nvlinks(handle, link)
        if link >= len(links):
            raise FakeNvmlInvalidArgument("Invalid Argument")
        return _PciInfo(busId=links[link])

    def _nvlinks(self, handle: object, link: int) -> list[str]:
        gpu = self._gpu(handle)
        links = self._links[self._gpus.index(gpu)]
        if not links:
            raise FakeNvmlNotSupported("Not Supported")
        if link >= _LINKS:
            raise FakeNvmlInvalidArgument("Invalid Argument")
        return links

    def _gpu(self, handle: object) -> GpuInfo:
        self._require_session()
        if not isinstance(handle, int) or not 0 <= handle < len(self._gpus):
            raise FakeNvmlInvalidArgument("Invalid Argument")
        return self._gpus[handle]

    def _require_session(self) -> None:
        if self.sessions <= 0:
            raise FakeNvmlError("Uninitialized")


def fake_nvml_probe(gpus: Sequence[GpuInfo], *, nvswitch: bool = False) -> NvmlGpuProbe:
    """The real NVML probe reading ``gpus`` from a ``FakeNvml``."""
    return NvmlGpuProbe(FakeNvml(gpus, nvswitch=nvswitch))
