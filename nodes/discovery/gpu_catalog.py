"""Which catalog entry a GPU is, and what a node's GPUs amount to. Pure.

``catalog_entry`` maps one GPU to an ``AcceleratorSpec`` and never raises (an unknown card gets
a spec derived from NVML with warnings); ``ray_accelerator_type`` reproduces the name Ray 2.60
gives the card; ``describe_gpus`` summarises a node for ``gearshift node start``. Product names
of AMD cards ("AMD Instinct MI300X") map too, for a future ROCm probe.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from nodes.accelerators import ACCELERATORS, AcceleratorKind, AcceleratorSpec
from nodes.discovery.gpu import MEMORY_TOLERANCE, GpuInfo, GpuProbe

# --- catalog mapping ------------------------------------------------------------------------

_Resolver = Callable[["GpuInfo"], tuple[str, list[str]]]


def _fixed(name: str) -> _Resolver:
    return lambda info: (name, [])


def _a100(info: GpuInfo) -> tuple[str, list[str]]:
    name = "A100-80GB" if info.memory_gib > 60 else "A100-40GB"
    if "pcie" not in info.name.lower():
        return name, []
    return name, [
        f"{info.name} is the PCIe card; the catalog's {name} entry has the SXM part's figures "
        f"(NVLink, {ACCELERATORS[name].memory_bandwidth_gbps:,.0f} GB/s)"
    ]


def _h100(info: GpuInfo) -> tuple[str, list[str]]:
    lowered = info.name.lower()
    if "pcie" in lowered:
        return "H100-PCIe", []
    if "hbm3" in lowered or "sxm" in lowered:
        return "H100-SXM", []
    guess = "H100-SXM" if info.nvlink_peers else "H100-PCIe"
    return guess, [
        f"{info.name}: the name does not say SXM or PCIe; NVLink "
        f"{'present' if info.nvlink_peers else 'absent'}, so using {guess}"
    ]


def _h200(info: GpuInfo) -> tuple[str, list[str]]:
    if "nvl" not in info.name.lower():
        return "H200", []
    return "H200", [f"{info.name} is the NVL (PCIe) card; the catalog's H200 entry is the SXM part"]


# First match wins. Names are NVML's ("NVIDIA A100-SXM4-40GB", "Tesla T4"); the word boundaries
# keep "L4" from matching "L40S" and "A100" from matching "A1000". H100 NVL (94 GB) and H20 are
# not catalog entries and fall through to a spec derived from NVML.
_RULES: tuple[tuple[re.Pattern[str], _Resolver], ...] = (
    (re.compile(r"\bH100\b(?!.*\bNVL\b)"), _h100),
    (re.compile(r"\bA100\b"), _a100),
    (re.compile(r"\bH200\b"), _h200),
    (re.compile(r"\bB200\b"), _fixed("B200")),
    (re.compile(r"\bL40S\b"), _fixed("L40S")),
    (re.compile(r"\bL4\b"), _fixed("L4")),
    (re.compile(r"\bA10G\b"), _fixed("A10G")),
    (re.compile(r"\bT4\b"), _fixed("T4")),
    (re.compile(r"\bV100\b"), _fixed("V100")),
    (re.compile(r"\bRTX 4090\b"), _fixed("RTX-4090")),
    (re.compile(r"\bMI300X\b"), _fixed("MI300X")),
)


def _catalog_match(info: GpuInfo) -> tuple[AcceleratorSpec, list[str]] | None:
    for pattern, resolve in _RULES:
        if pattern.search(info.name):
            name, warnings = resolve(info)
            return ACCELERATORS[name], warnings
    return None


def catalog_entry(info: GpuInfo) -> tuple[AcceleratorSpec, list[str]]:
    """The catalog entry for ``info`` and warnings for the operator; never raises.

    A100 40 vs 80 GB is told by memory, H100 SXM vs PCIe by name (then by NVLink), V100 16 and
    32 GB share one entry. A GPU the catalog lacks gets a spec derived from NVML (see
    ``derived_spec``). Warnings flag MIG, a memory total far from the entry's, and form factors
    the entry does not describe exactly.
    """
    matched = _catalog_match(info)
    if matched is None:
        spec, warnings = derived_spec(info)
    else:
        spec, warnings = matched
        if abs(info.memory_gib - spec.memory_gib) > MEMORY_TOLERANCE * spec.memory_gib:
            warnings.append(
                f"{info.name}: NVML reports {info.memory_gib:.1f} GiB but the catalog's "
                f"{spec.name} entry has {spec.memory_gib:.1f} GiB; plans use the catalog figure"
            )
    if info.mig_enabled:
        warnings.append(
            f"GPU {info.index} ({info.name}) has MIG enabled: engines see MIG slices, not the "
            f"whole GPU this spec describes; disable MIG (nvidia-smi -i {info.index} -mig 0) or "
            "keep the GPU out of CUDA_VISIBLE_DEVICES"
        )
    return spec, warnings


@dataclass(frozen=True, slots=True)
class _Family:
    """Datasheet figures of one card standing in for its compute capability; [U] estimates."""

    anchor: str
    bandwidth_gbps: float
    bf16_tflops: float
    fp8_tflops: float | None
    price_per_hour: float


# One representative card per compute capability, the most common datacenter part of the
# family (performance.md §3.1 figures; the RTX 5090 row is a datasheet figure [U]). Prices are
# placeholders copied from the catalog (RTX 5090: RunPod-class ~$0.9/h [U]).
_FAMILIES: dict[tuple[int, int], _Family] = {
    (7, 0): _Family("V100 (Volta)", 900, 125, None, 3.06),
    (7, 5): _Family("T4 (Turing)", 320, 65, None, 0.526),
    (8, 0): _Family("A100-40GB (Ampere GA100)", 1555, 312, None, 1.20),
    (8, 6): _Family("A10G (Ampere GA10x)", 600, 70, None, 1.006),
    (8, 9): _Family("L4 (Ada)", 300, 121, 242, 0.78),
    (9, 0): _Family("H100-PCIe (Hopper)", 2000, 756, 1513, 3.51),
    (10, 0): _Family("B200 (Blackwell)", 8000, 2250, 4500, 10.57),
    (12, 0): _Family("RTX 5090 (Blackwell GB20x)", 1792, 209, 419, 0.90),
}


def _family(capability: tuple[int, int]) -> _Family:
    """The family of ``capability``, or of the closest lower one listed (Volta for older cards)."""
    lower = [cc for cc in _FAMILIES if cc <= capability]
    return _FAMILIES[max(lower) if lower else min(_FAMILIES)]


def derived_spec(info: GpuInfo) -> tuple[AcceleratorSpec, list[str]]:
    """A spec for a GPU the catalog lacks: memory from NVML, the rest from its capability family.

    The name is the product name without the vendor word, spaces turned to dashes
    ("NVIDIA RTX A6000" -> "RTX-A6000"); ``calibrated`` is False; the price is a placeholder
    (the family anchor's) that the operator must replace.
    """
    family = _family(info.compute_capability)
    vendor = "amd" if info.name.upper().startswith("AMD") else "nvidia"
    name = re.sub(r"^(NVIDIA|Tesla|AMD)\s+", "", info.name.strip()).replace(" ", "-") or "GPU"
    major, minor = info.compute_capability
    spec = AcceleratorSpec(
        name=name,
        kind=AcceleratorKind.GPU,
        vendor=vendor,
        ray_type=ray_accelerator_type(info),
        memory_gib=round(info.memory_gib, 1),
        memory_bandwidth_gbps=family.bandwidth_gbps,
        bf16_tflops=family.bf16_tflops,
        fp8_tflops=family.fp8_tflops,
        default_price_per_hour=family.price_per_hour,
        price_source=f"placeholder: the {family.anchor} catalog price; set it with --price",
        interconnect="nvlink" if info.nvlink_peers else "pcie",
        supports_bf16=info.compute_capability >= (8, 0),
        calibrated=False,
    )
    return spec, [
        f"unknown GPU {info.name!r}; using a spec derived from NVML: memory "
        f"{spec.memory_gib:.1f} GiB, bandwidth/flops estimated from compute capability "
        f"{major}.{minor} ({family.anchor}: {family.bandwidth_gbps:,.0f} GB/s, "
        f"{family.bf16_tflops:,.0f} TFLOP/s); roofline only, not calibrated",
        f"unknown GPU {info.name!r}: $/h is a placeholder (${family.price_per_hour:.2f}/h); "
        "set the real price with --price",
    ]


# Ray 2.60's NvidiaGPUAcceleratorManager._gpu_name_to_accelerator_type, reproduced so that the
# "accelerator_type:<T>" resource we declare equals the one Ray auto-detects.
_RAY_NVIDIA_NAME = re.compile(r"\w+\s+((?:[A-Z]+\s+)*[A-Z0-9]*\d[A-Z0-9]*)")


def ray_accelerator_type(info: GpuInfo) -> str:
    """The ``accelerator_type`` Ray 2.60 gives this GPU ("A100", "H100", "GeForce-RTX-4090").

    Ray does not tell A100 40/80 GB or H100 SXM/PCIe apart. It names AMD cards by PCI device id;
    for them this returns the catalog's Ray type when the card is known, else the product name
    joined with dashes.
    """
    name = info.name.strip()
    if name.upper().startswith("AMD"):
        matched = _catalog_match(info)
        if matched is not None and matched[0].ray_type is not None:
            return matched[0].ray_type
        return name.replace(" ", "-")
    match = _RAY_NVIDIA_NAME.match(name)
    result = match.group(1).replace(" ", "-") if match else None
    if result and len(result) > 1:
        return result
    return re.sub(r"^NVIDIA\s+", "", name).strip().replace(" ", "-") or "GPU"


# --- node summary ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeHardware:
    """The GPUs of one node as Gearshift declares them: ``count`` GPUs of ``accelerator``.

    ``gpus`` lists every GPU, including any of another type (see ``warnings``);
    ``nvlink_islands`` are the connected components of the NVLink graph, as sorted indices.
    """

    accelerator: AcceleratorSpec
    ray_type: str
    count: int
    gpus: tuple[GpuInfo, ...]
    nvlink_islands: tuple[tuple[int, ...], ...]
    warnings: tuple[str, ...]

    @property
    def largest_nvlink_island(self) -> int:
        """The most GPUs one tensor-parallel group can span without crossing PCIe."""
        return max((len(island) for island in self.nvlink_islands), default=0)


def nvlink_islands(gpus: Sequence[GpuInfo]) -> tuple[tuple[int, ...], ...]:
    """Connected components of the NVLink graph (a link counts if either end reports it)."""
    parent = {gpu.index: gpu.index for gpu in gpus}

    def root(index: int) -> int:
        while parent[index] != index:
            parent[index] = parent[parent[index]]
            index = parent[index]
        return index

    for gpu in gpus:
        for peer in gpu.nvlink_peers:
            if peer in parent:
                parent[root(peer)] = root(gpu.index)
    islands: dict[int, list[int]] = {}
    for index in sorted(parent):
        islands.setdefault(root(index), []).append(index)
    return tuple(sorted(tuple(members) for members in islands.values()))


def describe_gpus(probe: GpuProbe) -> NodeHardware | None:
    """Summarise the node's GPUs; None when the probe sees none.

    Mixed GPU types: the most common type is declared (ties go to the lowest index) and a
    warning names the others. Raises GpuProbeUnavailable as the probe does.
    """
    gpus = sorted(probe.gpus(), key=lambda gpu: gpu.index)
    if not gpus:
        return None
    entries = [catalog_entry(gpu) for gpu in gpus]
    specs = {spec.name: spec for spec, _ in entries}
    by_type: dict[str, list[GpuInfo]] = {}
    for gpu, (spec, _) in zip(gpus, entries, strict=True):
        by_type.setdefault(spec.name, []).append(gpu)
    chosen = max(by_type, key=lambda name: len(by_type[name]))  # first of equals: lowest index
    mine = by_type[chosen]
    warnings = [warning for _, entry_warnings in entries for warning in entry_warnings]
    if len(by_type) > 1:
        others = "; ".join(
            f"{len(group)}x {name} (GPU {', '.join(str(gpu.index) for gpu in group)})"
            for name, group in by_type.items()
            if name != chosen
        )
        warnings.append(
            f"GPUs of several types: declaring {len(mine)}x {chosen}, also present {others}. "
            f"Set CUDA_VISIBLE_DEVICES={','.join(str(gpu.index) for gpu in mine)} or run one "
            "Ray node per GPU type"
        )
    largest = max(len(island) for island in nvlink_islands(mine))
    if specs[chosen].interconnect == "nvlink" and len(mine) > 1 and largest < len(mine):
        warnings.append(
            f"the catalog's {chosen} entry assumes NVLink, but the largest NVLink island here "
            f"has {largest} of {len(mine)} GPUs; wider tensor parallelism crosses PCIe"
        )
    return NodeHardware(
        accelerator=specs[chosen],
        ray_type=ray_accelerator_type(mine[0]),
        count=len(mine),
        gpus=tuple(gpus),
        nvlink_islands=nvlink_islands(gpus),
        warnings=tuple(dict.fromkeys(warnings)),
    )
