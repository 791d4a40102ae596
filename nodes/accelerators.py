"""The accelerator catalog: memory, bandwidth, FLOP/s and a default price for each known card.

Figures are copied from the team's research notes (``shared/reference/performance.md`` §3.1 spec
sheet and §3.2 price anchors, 2026); the project never reads that file at run time. Values the
notes mark unverified ([U]) are flagged in the per-entry comments. ``memory_gib`` is the memory
the driver reports (what ``torch.cuda.mem_get_info`` calls total, what vLLM's
``gpu_memory_utilization`` is a fraction of), not the marketing "GB": an "80 GB" H100 reports about
79 GiB and a "24 GB" L4 about 22 GiB [U, from CUDA out-of-memory messages and vLLM logs].

Prices are *defaults* for a fleet file that does not set one; operators override them. Each entry
records where its price came from.

``calibrated`` is True only where a published end-to-end vLLM measurement on that card lands
within tolerance of the performance model (see ``nodes.calibration``); elsewhere the model is
"roofline-only". A unit test keeps the flag and the calibration table in agreement.
"""

from __future__ import annotations

import difflib
import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from scheduler.errors import CatalogError


class AcceleratorKind(enum.StrEnum):
    """Whether a replica runs on a GPU or on a CPU node."""

    GPU = "gpu"
    CPU = "cpu"


@dataclass(frozen=True, slots=True)
class AcceleratorSpec:
    """One accelerator type. For CPU nodes the figures describe the whole node.

    Invariants: every number is positive; ``ray_type`` is None exactly for CPU nodes; ``cores`` is
    set exactly for CPU nodes.
    """

    name: str
    kind: AcceleratorKind
    vendor: str
    ray_type: str | None
    memory_gib: float
    memory_bandwidth_gbps: float
    bf16_tflops: float
    fp8_tflops: float | None
    default_price_per_hour: float
    price_source: str
    interconnect: str
    supports_bf16: bool
    calibrated: bool
    cores: int | None = None
    aliases: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        numbers = (
            self.memory_gib,
            self.memory_bandwidth_gbps,
            self.bf16_tflops,
            self.default_price_per_hour,
        )
        if min(numbers) <= 0 or (self.fp8_tflops is not None and self.fp8_tflops <= 0):
            raise ValueError(f"accelerator {self.name!r}: figures must be positive")
        if (self.kind is AcceleratorKind.CPU) != (self.cores is not None):
            raise ValueError(f"accelerator {self.name!r}: cores is set exactly for CPU nodes")
        if (self.kind is AcceleratorKind.CPU) != (self.ray_type is None):
            raise ValueError(f"accelerator {self.name!r}: ray_type is None exactly for CPU nodes")
        if self.interconnect not in INTERCONNECTS:
            raise ValueError(f"accelerator {self.name!r}: interconnect not in {INTERCONNECTS}")


INTERCONNECTS = ("nvlink", "pcie", "xgmi", "none")

# CPU-node rules (performance.md §3.5). ``cores`` means logical CPUs (vCPUs), what Ray reports
# as ``num_cpus``.
# Bandwidth: ~10 GB/s per vCPU. The §3.5 anchor "Llama-2-7B Q4_K_M on 2 threads of a Xeon:
# ~4.5-5.5 tok/s" reads ~4 GB of weights per token, i.e. ~20 GB/s from two threads; the same
# section's rule of thumb is 10-20 GB/s per 2 vCPU. Capped at 100 GB/s, about half of an 8-channel
# DDR4-3200 socket (204.8 GB/s peak): a VM rarely gets more than its share. Pass a measured STREAM
# triad figure where you have one.
CPU_BANDWIDTH_GBPS_PER_CORE = 10.0
CPU_BANDWIDTH_CAP_GBPS = 100.0
# FLOP/s: 0.1 dense bf16 TFLOP/s per vCPU. One AVX-512-BF16 core issues two 512-bit VDPBF16PS per
# cycle (2 x 32 pairs x 2 FLOP = 128 FLOP/cycle), ~0.2-0.26 TFLOP/s at 1.6-2.0 GHz all-core,
# shared by two hyperthreads [U, Intel ISA reference; not measured]. CPUs without AVX-512-BF16 are
# slower; AMX (Sapphire Rapids) is faster.
CPU_BF16_TFLOPS_PER_CORE = 0.1
# Price: $0.0504 per vCPU-hour, AWS m7i.4xlarge on-demand (16 vCPU, 64 GiB) $0.8064/h / 16
# [U, us-east-1 list price from memory].
CPU_PRICE_PER_CORE_HOUR = 0.0504
CPU_PRICE_SOURCE = "AWS m7i on-demand per vCPU-hour, us-east-1 [U]"


def cpu_accelerator(
    cores: int,
    memory_gib: float,
    memory_bandwidth_gbps: float | None = None,
    price_per_hour: float | None = None,
) -> AcceleratorSpec:
    """A CPU node with ``cores`` vCPUs and ``memory_gib`` of host memory usable by the engine.

    Bandwidth defaults to ``min(10 GB/s x cores, 100 GB/s)``; FLOP/s to 0.1 bf16 TFLOP/s per vCPU;
    price to $0.0504 per vCPU-hour (see the module constants for sources).
    """
    if cores <= 0 or memory_gib <= 0:
        raise ValueError("a CPU node needs cores > 0 and memory_gib > 0")
    if memory_bandwidth_gbps is None:
        memory_bandwidth_gbps = min(CPU_BANDWIDTH_GBPS_PER_CORE * cores, CPU_BANDWIDTH_CAP_GBPS)
    return AcceleratorSpec(
        name="CPU",
        kind=AcceleratorKind.CPU,
        vendor="cpu",
        ray_type=None,
        memory_gib=memory_gib,
        memory_bandwidth_gbps=memory_bandwidth_gbps,
        bf16_tflops=CPU_BF16_TFLOPS_PER_CORE * cores,
        fp8_tflops=None,
        default_price_per_hour=(
            CPU_PRICE_PER_CORE_HOUR * cores if price_per_hour is None else price_per_hour
        ),
        price_source=CPU_PRICE_SOURCE if price_per_hour is None else "operator",
        interconnect="none",
        supports_bf16=True,
        calibrated=False,
        cores=cores,
    )


def _gpu(
    name: str,
    *,
    vendor: str = "nvidia",
    ray_type: str,
    memory_gib: float,
    bandwidth: float,
    bf16: float,
    fp8: float | None,
    price: float,
    price_source: str,
    interconnect: str,
    supports_bf16: bool = True,
    calibrated: bool = False,
    aliases: tuple[str, ...] = (),
) -> AcceleratorSpec:
    return AcceleratorSpec(
        name=name,
        kind=AcceleratorKind.GPU,
        vendor=vendor,
        ray_type=ray_type,
        memory_gib=memory_gib,
        memory_bandwidth_gbps=bandwidth,
        bf16_tflops=bf16,
        fp8_tflops=fp8,
        default_price_per_hour=price,
        price_source=price_source,
        interconnect=interconnect,
        supports_bf16=supports_bf16,
        calibrated=calibrated,
        aliases=aliases,
    )


_RUNPOD = "RunPod on-demand"
_CATALOG: tuple[AcceleratorSpec, ...] = (
    _gpu(
        "A100-40GB",
        ray_type="A100",
        memory_gib=39.4,
        bandwidth=1555,
        bf16=312,
        fp8=None,
        price=1.20,
        price_source="neocloud on-demand ~$1.1-1.3, 2026 [U]",
        interconnect="nvlink",
        calibrated=True,
        aliases=("A100-40G", "A100-SXM4-40GB", "A100 40GB"),
    ),
    _gpu(
        "A100-80GB",
        ray_type="A100",
        memory_gib=79.2,
        bandwidth=2039,
        bf16=312,
        fp8=None,
        price=2.45,
        price_source=f"{_RUNPOD} (SXM), 2026",
        interconnect="nvlink",
        calibrated=True,
        aliases=("A100-80G", "A100-SXM4-80GB", "A100 80GB", "A100-80"),
    ),
    _gpu(
        "H100-SXM",
        ray_type="H100",
        memory_gib=79.1,
        bandwidth=3350,
        bf16=989,
        fp8=1979,
        price=2.69,
        price_source=f"{_RUNPOD} (spheron), 2026",
        interconnect="nvlink",
        calibrated=True,
        aliases=("H100", "H100-SXM5", "H100-80GB-HBM3", "H100 SXM"),
    ),
    # H100 PCIe spec figures are [U]; the price is above the SXM part's in the notes, as listed.
    _gpu(
        "H100-PCIe",
        ray_type="H100",
        memory_gib=79.1,
        bandwidth=2000,
        bf16=756,
        fp8=1513,
        price=3.51,
        price_source=f"{_RUNPOD} (deploybase), 2026-03",
        interconnect="pcie",
        aliases=("H100-PCIE-80GB", "H100 PCIe"),
    ),
    _gpu(
        "H200",
        ray_type="H200",
        memory_gib=139.8,
        bandwidth=4800,
        bf16=989,
        fp8=1979,
        price=6.35,
        price_source=f"{_RUNPOD}, 2026",
        interconnect="nvlink",
        aliases=("H200-SXM", "H200-141GB"),
    ),
    # RunPod lists 180 GB; fal lists 192 GB (HGX B200 variants differ).
    _gpu(
        "B200",
        ray_type="B200",
        memory_gib=178.4,
        bandwidth=8000,
        bf16=2250,
        fp8=4500,
        price=10.57,
        price_source=f"{_RUNPOD}, 2026",
        interconnect="nvlink",
        aliases=("B200-SXM",),
    ),
    _gpu(
        "L40S",
        ray_type="L40S",
        memory_gib=44.5,
        bandwidth=864,
        bf16=362,
        fp8=733,
        price=1.40,
        price_source=f"{_RUNPOD}, 2026",
        interconnect="pcie",
        calibrated=True,
    ),
    _gpu(
        "L4",
        ray_type="L4",
        memory_gib=22.0,
        bandwidth=300,
        bf16=121,
        fp8=242,
        price=0.78,
        price_source=f"{_RUNPOD}, 2026",
        interconnect="pcie",
        calibrated=True,
    ),
    # A10G tensor FLOP/s are unpublished: 125 is the A10 datasheet figure; ~70 is quoted for the
    # A10G, whose GA102 runs fp16-with-fp32-accumulate at half rate [U]. We take the lower one.
    _gpu(
        "A10G",
        ray_type="A10G",
        memory_gib=22.1,
        bandwidth=600,
        bf16=70,
        fp8=None,
        price=1.006,
        price_source="AWS g5.xlarge on-demand, 2026-06",
        interconnect="pcie",
    ),
    # T4 and V100 have no bf16: the figures are fp16 tensor FLOP/s; serve them in float16.
    _gpu(
        "T4",
        ray_type="T4",
        memory_gib=14.7,
        bandwidth=320,
        bf16=65,
        fp8=None,
        price=0.526,
        price_source="AWS g4dn.xlarge on-demand [U]",
        interconnect="pcie",
        supports_bf16=False,
        aliases=("Tesla-T4",),
    ),
    _gpu(
        "V100",
        ray_type="V100",
        memory_gib=15.8,
        bandwidth=900,
        bf16=125,
        fp8=None,
        price=3.06,
        price_source="AWS p3.2xlarge on-demand [U]",
        interconnect="nvlink",
        supports_bf16=False,
        aliases=("V100-SXM2-16GB", "Tesla-V100", "V100-16GB"),
    ),
    # 165 TFLOP/s is fp16 with fp32 accumulate (what PyTorch uses); ~330 with fp16 accumulate.
    _gpu(
        "RTX-4090",
        ray_type="GeForce-RTX-4090",
        memory_gib=23.6,
        bandwidth=1008,
        bf16=165,
        fp8=330,
        price=0.60,
        price_source=f"{_RUNPOD}, 2026",
        interconnect="pcie",
        calibrated=True,
        aliases=("4090", "GeForce-RTX-4090", "RTX4090"),
    ),
    _gpu(
        "MI300X",
        vendor="amd",
        ray_type="AMD-Instinct-MI300X-OAM",
        memory_gib=191.7,
        bandwidth=5300,
        bf16=1307,
        fp8=2615,
        price=3.99,
        price_source="MAKO listing, 2024 [S/U]",
        interconnect="xgmi",
        aliases=("AMD-Instinct-MI300X-OAM", "Instinct-MI300X"),
    ),
    cpu_accelerator(cores=16, memory_gib=64.0),
)

ACCELERATORS: Mapping[str, AcceleratorSpec] = MappingProxyType({a.name: a for a in _CATALOG})


def _key(name: str) -> str:
    """Fold case and separators so "a100 80gb", "A100-80GB" and "a100_80GB" compare equal."""
    return "".join(ch for ch in name.lower() if ch.isalnum())


_BY_KEY: Mapping[str, str] = MappingProxyType(
    {_key(alias): spec.name for spec in _CATALOG for alias in (spec.name, *spec.aliases)}
)


def unknown_name_error(what: str, name: str, valid: Iterable[str]) -> CatalogError:
    """A CatalogError for an unknown ``what`` named ``name``, with close matches and valid names."""
    names = sorted(set(valid))
    lowered = {n.lower(): n for n in names}
    close = difflib.get_close_matches(name.lower(), list(lowered), n=3, cutoff=0.5)
    prefixed = [n for n in names if _key(n).startswith(_key(name))] if _key(name) else []
    suggestions = list(dict.fromkeys([lowered[c] for c in close] + prefixed))
    hint = f" Did you mean {', '.join(suggestions)}?" if suggestions else ""
    return CatalogError(f"Unknown {what} {name!r}.{hint} Valid names: {', '.join(names)}.")


def accelerator(name: str) -> AcceleratorSpec:
    """The catalog entry called ``name`` or one of its aliases, ignoring case, spaces and dashes.

    Raises CatalogError, listing close matches and the valid names, for an unknown name.
    """
    canonical = _BY_KEY.get(_key(name))
    if canonical is None:
        raise unknown_name_error("accelerator", name, ACCELERATORS)
    return ACCELERATORS[canonical]
