"""CPU discovery: cores, memory and the ISA flags vLLM's CPU backend cares about, read from /proc.

``CpuProbe`` is the seam; ``LinuxCpuProbe`` reads ``/proc/cpuinfo``, ``/proc/meminfo`` and the
cgroup v2 limits (paths injectable), ``FakeCpuProbe`` returns a fixed ``CpuInfo``. Parsing
(``cpu_info_from_proc``), the vLLM verdict (``vllm_cpu_support``) and the catalog spec
(``cpu_accelerator_for``) are pure.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from nodes.accelerators import AcceleratorSpec, cpu_accelerator

GIB = float(2**30)

# The flags kept in ``CpuInfo.flags``: x86 names from /proc/cpuinfo "flags", Arm names from
# "Features" (asimd is NEON; svebf16 / bf16 are the Arm bf16 extensions).
X86_FLAGS = frozenset({"avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile"})
ARM_FLAGS = frozenset({"asimd", "sve", "sve2", "bf16", "svebf16", "i8mm"})

# Arm cores by (implementer, part) from /proc/cpuinfo, which names no model on arm64.
_ARM_CORES = {
    ("0x41", "0xd0c"): "Arm Neoverse-N1 (e.g. AWS Graviton2)",
    ("0x41", "0xd40"): "Arm Neoverse-V1 (e.g. AWS Graviton3)",
    ("0x41", "0xd49"): "Arm Neoverse-N2",
    ("0x41", "0xd4f"): "Arm Neoverse-V2 (e.g. AWS Graviton4, NVIDIA Grace)",
}


@dataclass(frozen=True, slots=True)
class CpuInfo:
    """The CPUs and memory of this node, and the cgroup limits of the process reading them.

    ``logical_cores`` counts /proc/cpuinfo processors (vCPUs); ``physical_cores`` is None where
    the kernel does not list core ids (most Arm systems). ``cpu_limit`` / ``memory_limit_bytes``
    come from cgroup v2 ``cpu.max`` / ``memory.max`` and are None when unlimited.
    """

    architecture: str
    model_name: str
    logical_cores: int
    physical_cores: int | None
    memory_total_bytes: int
    flags: frozenset[str]
    cpu_limit: float | None = None
    memory_limit_bytes: int | None = None

    @property
    def usable_cores(self) -> int:
        """vCPUs this process may use: the core count, capped by the cgroup quota (at least 1)."""
        if self.cpu_limit is None:
            return self.logical_cores
        return max(1, min(self.logical_cores, math.floor(self.cpu_limit)))

    @property
    def usable_memory_bytes(self) -> int:
        """Host memory, capped by the cgroup memory limit."""
        if self.memory_limit_bytes is None:
            return self.memory_total_bytes
        return min(self.memory_total_bytes, self.memory_limit_bytes)


class CpuProbe(Protocol):
    """Reads this node's CPUs and memory."""

    def cpu(self) -> CpuInfo:
        """The node's CPU facts. Raises OSError when the system files cannot be read at all."""
        ...


class FakeCpuProbe(CpuProbe):
    """A probe that reports a fixed ``CpuInfo``."""

    def __init__(self, info: CpuInfo) -> None:
        self._info = info

    def cpu(self) -> CpuInfo:
        return self._info


class LinuxCpuProbe(CpuProbe):
    """Reads /proc/cpuinfo, /proc/meminfo and cgroup v2 limits; every path is injectable.

    A missing /proc/meminfo falls back to ``os.sysconf``; missing cgroup files mean no limit.
    """

    def __init__(
        self,
        cpuinfo: Path = Path("/proc/cpuinfo"),
        meminfo: Path = Path("/proc/meminfo"),
        cgroup: Path = Path("/sys/fs/cgroup"),
    ) -> None:
        self._cpuinfo = cpuinfo
        self._meminfo = meminfo
        self._cgroup = cgroup

    def cpu(self) -> CpuInfo:
        meminfo = _read(self._meminfo)
        if meminfo is None:
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
            meminfo = f"MemTotal: {total // 1024} kB\n"
        return cpu_info_from_proc(
            self._cpuinfo.read_text(encoding="utf-8", errors="replace"),
            meminfo,
            cpu_max=_read(self._cgroup / "cpu.max"),
            memory_max=_read(self._cgroup / "memory.max"),
            default_cores=os.cpu_count() or 1,
        )


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def cpu_info_from_proc(
    cpuinfo: str,
    meminfo: str,
    *,
    cpu_max: str | None = None,
    memory_max: str | None = None,
    default_cores: int = 1,
) -> CpuInfo:
    """Parse the text of /proc/cpuinfo, /proc/meminfo and cgroup v2 ``cpu.max``/``memory.max``.

    The architecture is read from the text: x86 lists "flags", Arm "Features".
    ``default_cores`` stands in when cpuinfo lists no processor. Raises ValueError when
    meminfo has no MemTotal line.
    """
    blocks = [_fields(block) for block in cpuinfo.split("\n\n")]
    processors = [block for block in blocks if "processor" in block] or [{}]
    first = processors[0]
    if "flags" in first:
        architecture, raw_flags, known = "x86_64", first["flags"], X86_FLAGS
    elif "Features" in first:
        architecture, raw_flags, known = "aarch64", first["Features"], ARM_FLAGS
    else:
        architecture, raw_flags, known = "unknown", "", frozenset()
    cores = {
        (p["physical id"], p["core id"])
        for p in processors
        if "physical id" in p and "core id" in p
    }
    return CpuInfo(
        architecture=architecture,
        model_name=_model_name(first),
        logical_cores=len(processors) if first else default_cores,
        physical_cores=len(cores) or None,
        memory_total_bytes=_mem_total(meminfo),
        flags=frozenset(raw_flags.split()) & known,
        cpu_limit=_cpu_limit(cpu_max),
        memory_limit_bytes=_memory_limit(memory_max),
    )


def _fields(block: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in block.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def _model_name(processor: dict[str, str]) -> str:
    if processor.get("model name"):
        return processor["model name"]
    implementer = processor.get("CPU implementer", "").lower()
    part = processor.get("CPU part", "").lower()
    if (implementer, part) in _ARM_CORES:
        return _ARM_CORES[implementer, part]
    return f"CPU implementer {implementer} part {part}" if implementer else "unknown CPU"


def _mem_total(meminfo: str) -> int:
    for line in meminfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "MemTotal":
            number, _, unit = value.strip().partition(" ")
            return int(number) * (1024 if unit.strip().lower() == "kb" else 1)
    raise ValueError("meminfo has no MemTotal line")


def _cpu_limit(cpu_max: str | None) -> float | None:
    """cgroup v2 ``cpu.max`` is "<quota> <period>" in µs, or "max <period>" for no limit."""
    parts = (cpu_max or "").split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    return int(parts[0]) / int(parts[1])


def _memory_limit(memory_max: str | None) -> int | None:
    text = (memory_max or "").strip()
    return int(text) if text.isdigit() else None


def vllm_cpu_support(info: CpuInfo) -> tuple[bool, list[str]]:
    """Whether vLLM's CPU backend runs here, with notes on what speeds it up or is missing.

    x86 needs AVX2 at least; AVX-512 (avx512f) is what vLLM recommends, and avx512_bf16,
    avx512_vnni and AMX help further. Arm needs NEON (asimd). Other architectures are not a
    Gearshift CPU tier.
    """
    flags = info.flags
    if info.architecture == "x86_64":
        if "avx2" not in flags:
            return False, ["no AVX2: vLLM's CPU backend needs AVX2 at least (AVX-512 recommended)"]
        if "avx512f" not in flags:
            notes = [
                "AVX2 only: vLLM runs, but AVX-512 (avx512f) is recommended; GEMMs and "
                "attention run at about half the vector width"
            ]
        else:
            notes = ["AVX-512 (avx512f) present, as vLLM recommends"]
        if "avx512_bf16" in flags:
            notes.append("avx512_bf16: native bf16 dot products")
        else:
            notes.append("no avx512_bf16: bf16 weights are converted in software, slower")
        if "avx512_vnni" in flags:
            notes.append("avx512_vnni: int8 dot products for int8-quantised models")
        if {"amx_bf16", "amx_tile"} <= flags:
            notes.append("AMX (amx_bf16, amx_tile): oneDNN runs bf16 GEMMs on tile units")
        return True, notes
    if info.architecture == "aarch64":
        if "asimd" not in flags:
            return False, ["no NEON (asimd): vLLM's Arm CPU backend needs it"]
        notes = ["Arm with NEON (asimd): vLLM's Arm CPU backend runs"]
        if "sve" in flags:
            notes.append("SVE present")
        if flags & {"bf16", "svebf16"}:
            notes.append("Arm bf16 extension: native bf16 dot products")
        return True, notes
    return False, [f"architecture {info.architecture!r}: Gearshift's CPU tier is x86_64 or aarch64"]


def cpu_accelerator_for(
    info: CpuInfo,
    price_per_hour: float | None = None,
    memory_bandwidth_gbps: float | None = None,
) -> AcceleratorSpec:
    """The catalog's CPU spec for this node: usable vCPUs and memory (cgroup limits applied).

    Bandwidth, FLOP/s and price default to ``cpu_accelerator``'s per-vCPU rules; pass a
    measured STREAM figure or the node's real price where known.
    """
    return cpu_accelerator(
        cores=info.usable_cores,
        memory_gib=round(info.usable_memory_bytes / GIB, 1),
        memory_bandwidth_gbps=memory_bandwidth_gbps,
        price_per_hour=price_per_hour,
    )
