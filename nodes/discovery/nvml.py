"""``NvmlGpuProbe``: the GPUs of this node as NVML reports them, through ``pynvml`` (the
``nvidia-ml-py`` package, imported only when a probe runs).

NVLink peers come from each active link's remote PCI address; an address that is not a local
GPU is an NVSwitch, and GPUs on the same switch count as peers. NVML sees NVIDIA GPUs only:
AMD GPUs need a ROCm probe (``amdsmi``) implementing the same ``GpuProbe`` Protocol.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator, Sequence
from typing import Protocol, cast

from nodes.discovery.gpu import GpuInfo, GpuProbe, GpuProbeUnavailable


class NvmlMemory(Protocol):
    """What ``nvmlDeviceGetMemoryInfo`` returns (the fields read here)."""

    @property
    def total(self) -> int: ...
    @property
    def free(self) -> int: ...


class NvmlPciInfo(Protocol):
    """What ``nvmlDeviceGetPciInfo`` / ``nvmlDeviceGetNvLinkRemotePciInfo`` return."""

    @property
    def busId(self) -> str | bytes: ...


class NvmlLibrary(Protocol):
    """The part of the ``pynvml`` module the probe uses; ``fake_nvml.FakeNvml`` implements it."""

    NVMLError: type[Exception]
    NVMLError_NotSupported: type[Exception]
    NVMLError_InvalidArgument: type[Exception]
    NVMLError_FunctionNotFound: type[Exception]
    NVML_NVLINK_MAX_LINKS: int
    NVML_FEATURE_ENABLED: int
    NVML_DEVICE_MIG_ENABLE: int

    def nvmlInit(self) -> None: ...
    def nvmlShutdown(self) -> None: ...
    def nvmlSystemGetDriverVersion(self) -> str | bytes: ...
    def nvmlDeviceGetCount(self) -> int: ...
    def nvmlDeviceGetHandleByIndex(self, index: int) -> object: ...
    def nvmlDeviceGetName(self, handle: object) -> str | bytes: ...
    def nvmlDeviceGetUUID(self, handle: object) -> str | bytes: ...
    def nvmlDeviceGetMemoryInfo(self, handle: object) -> NvmlMemory: ...
    def nvmlDeviceGetCudaComputeCapability(self, handle: object) -> tuple[int, int]: ...
    def nvmlDeviceGetMigMode(self, handle: object) -> Sequence[int]: ...
    def nvmlDeviceGetPciInfo(self, handle: object) -> NvmlPciInfo: ...
    def nvmlDeviceGetNvLinkState(self, handle: object, link: int) -> int: ...
    def nvmlDeviceGetNvLinkRemotePciInfo(self, handle: object, link: int) -> NvmlPciInfo: ...


class NvmlGpuProbe(GpuProbe):
    """Reads the GPUs through NVML; each call opens and closes its own NVML session.

    ``library`` defaults to the ``pynvml`` module, imported on first use. NVLink peers come from
    each active link's remote PCI address: a local GPU's address makes it a peer; any other
    address is an NVSwitch, and GPUs that reach the same switch are peers. Links, MIG and
    NVLink queries that the card or driver does not support read as "none" / "off". NVML
    ignores CUDA_VISIBLE_DEVICES: it reports every GPU of the machine, in PCI order.
    """

    def __init__(self, library: NvmlLibrary | None = None) -> None:
        self._library = library

    def gpus(self) -> list[GpuInfo]:
        with self._session() as nvml:
            handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]
            peers = _nvlink_peers(nvml, handles)
            return [_read_gpu(nvml, i, handle, peers[i]) for i, handle in enumerate(handles)]

    def driver_version(self) -> str | None:
        with self._session() as nvml:
            return _text(nvml.nvmlSystemGetDriverVersion())

    @contextlib.contextmanager
    def _session(self) -> Iterator[NvmlLibrary]:
        nvml = self._library if self._library is not None else _import_pynvml()
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as exc:
            raise GpuProbeUnavailable(
                f"NVML did not initialise ({exc}); is the NVIDIA driver installed?"
            ) from exc
        try:
            yield nvml
        except nvml.NVMLError as exc:
            raise GpuProbeUnavailable(f"NVML failed while reading the GPUs: {exc}") from exc
        finally:
            nvml.nvmlShutdown()


def _import_pynvml() -> NvmlLibrary:
    try:
        return cast(NvmlLibrary, importlib.import_module("pynvml"))
    except ImportError as exc:
        raise GpuProbeUnavailable(
            "no NVML binding: the nvidia-ml-py package (module pynvml) is not installed"
        ) from exc


def _read_gpu(nvml: NvmlLibrary, index: int, handle: object, peers: set[int]) -> GpuInfo:
    memory = nvml.nvmlDeviceGetMemoryInfo(handle)
    major, minor = nvml.nvmlDeviceGetCudaComputeCapability(handle)
    try:
        mig = nvml.nvmlDeviceGetMigMode(handle)[0] == nvml.NVML_DEVICE_MIG_ENABLE
    except _absent(nvml):
        mig = False
    return GpuInfo(
        index=index,
        uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
        name=_text(nvml.nvmlDeviceGetName(handle)).strip(),
        memory_total_bytes=int(memory.total),
        memory_free_bytes=int(memory.free),
        compute_capability=(int(major), int(minor)),
        mig_enabled=mig,
        nvlink_peers=tuple(sorted(peers - {index})),
        pci_bus_id=_bus_id(nvml.nvmlDeviceGetPciInfo(handle).busId),
    )


def _nvlink_peers(nvml: NvmlLibrary, handles: Sequence[object]) -> list[set[int]]:
    by_bus = {_bus_id(nvml.nvmlDeviceGetPciInfo(h).busId): i for i, h in enumerate(handles)}
    peers: list[set[int]] = [set() for _ in handles]
    switches: dict[str, set[int]] = {}
    for index, handle in enumerate(handles):
        for link in range(nvml.NVML_NVLINK_MAX_LINKS):
            try:
                if nvml.nvmlDeviceGetNvLinkState(handle, link) != nvml.NVML_FEATURE_ENABLED:
                    continue
                remote = _bus_id(nvml.nvmlDeviceGetNvLinkRemotePciInfo(handle, link).busId)
            except _absent(nvml):
                continue
            if remote in by_bus:
                peers[index].add(by_bus[remote])
                peers[by_bus[remote]].add(index)
            else:
                switches.setdefault(remote, set()).add(index)
    for members in switches.values():
        for index in members:
            peers[index] |= members
    return peers


def _absent(nvml: NvmlLibrary) -> tuple[type[Exception], ...]:
    """NVML errors that mean "this card or driver has no such feature"."""
    return (
        nvml.NVMLError_NotSupported,
        nvml.NVMLError_InvalidArgument,
        nvml.NVMLError_FunctionNotFound,
    )


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _bus_id(value: str | bytes) -> str:
    """NVML's PCI address form, ``00000000:18:00.0``, whether given the 4- or 8-digit domain."""
    parts = _text(value).strip().upper().split(":")
    if len(parts) == 3:
        with contextlib.suppress(ValueError):
            parts[0] = f"{int(parts[0], 16):08X}"
    return ":".join(parts)
