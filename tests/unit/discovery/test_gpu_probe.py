"""GPU discovery: NVML data to catalog entry and Ray type; every probe keeps one contract."""

from __future__ import annotations

import sys
from dataclasses import replace

import pytest
from ray._private.accelerators.nvidia_gpu import NvidiaGPUAcceleratorManager

from nodes.accelerators import ACCELERATORS, AcceleratorKind
from nodes.discovery import (
    FakeGpuProbe,
    GpuInfo,
    GpuProbe,
    GpuProbeUnavailable,
    NvmlGpuProbe,
    catalog_entry,
    describe_gpus,
    nvlink_islands,
    ray_accelerator_type,
)
from nodes.discovery import fake_nvml as fake
from nodes.discovery.fake_nvml import (
    AMD_CARDS,
    CARDS,
    UNLISTED_CARDS,
    FakeNvml,
    FakeNvmlError,
    FakeNvmlLibraryNotFound,
    NvmlCard,
    fake_gpu,
    fake_node,
)
from nodes.models import Dtype, catalog_model
from nodes.performance import replica_performance

# Every fake NVIDIA card and the catalog entry it must map to.
EXPECTED = {
    "a100-sxm4-40gb": "A100-40GB",
    "a100-pcie-40gb": "A100-40GB",
    "a100-sxm4-80gb": "A100-80GB",
    "a100-80gb-pcie": "A100-80GB",
    "h100-sxm": "H100-SXM",
    "h100-pcie": "H100-PCIe",
    "h200": "H200",
    "b200": "B200",
    "l40s": "L40S",
    "l4": "L4",
    "a10g": "A10G",
    "t4": "T4",
    "v100-sxm2-16gb": "V100",
    "v100-sxm2-32gb": "V100",
    "rtx-4090": "RTX-4090",
}
# Catalog GPUs NVML cannot see (not NVIDIA); their names are mapped in a test of their own.
NVML_INVISIBLE = {"MI300X"}

# ecosystem.md §1.1: how Ray 2.60 names a detected GPU.
RAY_TABLE = {
    "NVIDIA A100-SXM4-80GB": "A100",
    "NVIDIA A100 80GB PCIe": "A100",
    "NVIDIA H100 80GB HBM3": "H100",
    "NVIDIA H100 PCIe": "H100",
    "NVIDIA L4": "L4",
    "Tesla T4": "T4",
    "NVIDIA A10G": "A10G",
    "NVIDIA L40S": "L40S",
    "NVIDIA H200": "H200",
    "NVIDIA B200": "B200",
    "NVIDIA RTX PRO 6000 Blackwell Server Edition": "RTX-PRO-6000",
    "NVIDIA RTX 6000 Ada Generation": "RTX-6000",
    "NVIDIA GeForce RTX 4090": "GeForce-RTX-4090",
}


def _gpu(
    name: str, memory_mib: int, cc: tuple[int, int] = (8, 0), *, nvlink_peers: tuple[int, ...] = ()
) -> GpuInfo:
    return fake_gpu(NvmlCard(name, memory_mib, cc), nvlink_peers=nvlink_peers)


# --- catalog mapping -------------------------------------------------------------------------


def test_every_fake_card_has_an_expected_entry() -> None:
    assert set(EXPECTED) == set(CARDS)


@pytest.mark.parametrize("card", sorted(CARDS))
def test_nvml_card_maps_to_its_catalog_entry(card: str) -> None:
    spec, _ = catalog_entry(fake_gpu(card))
    assert spec.name == EXPECTED[card]
    assert spec is ACCELERATORS[EXPECTED[card]]


def test_fake_cards_cover_every_catalog_gpu_nvml_can_see() -> None:
    mapped = {catalog_entry(fake_gpu(card))[0].name for card in CARDS}
    gpus = {name for name, spec in ACCELERATORS.items() if spec.kind is AcceleratorKind.GPU}
    assert mapped == gpus - NVML_INVISIBLE
    assert all(ACCELERATORS[name].vendor != "nvidia" for name in NVML_INVISIBLE)


def test_mi300x_maps_by_product_name() -> None:
    gpu = fake_gpu("mi300x")
    spec, warnings = catalog_entry(gpu)
    assert spec is ACCELERATORS["MI300X"]
    assert warnings == []
    assert ray_accelerator_type(gpu) == "AMD-Instinct-MI300X-OAM"
    assert set(AMD_CARDS) == {"mi300x"}


@pytest.mark.parametrize(
    ("memory_mib", "expected"), [(40960, "A100-40GB"), (40536, "A100-40GB"), (81920, "A100-80GB")]
)
def test_a100_size_comes_from_memory_not_name(memory_mib: int, expected: str) -> None:
    for name in ("NVIDIA A100-SXM4-40GB", "NVIDIA A100-SXM4-80GB", "NVIDIA A100"):
        assert catalog_entry(_gpu(name, memory_mib))[0].name == expected


def test_h100_form_factor_from_name() -> None:
    assert catalog_entry(fake_gpu("h100-sxm"))[0].name == "H100-SXM"
    assert catalog_entry(fake_gpu("h100-pcie"))[0].name == "H100-PCIe"
    assert catalog_entry(fake_gpu("h100-pcie"))[1] == []


@pytest.mark.parametrize(("peers", "expected"), [((1,), "H100-SXM"), ((), "H100-PCIe")])
def test_h100_without_form_factor_in_name_falls_back_to_nvlink(
    peers: tuple[int, ...], expected: str
) -> None:
    spec, warnings = catalog_entry(_gpu("NVIDIA H100", 81559, (9, 0), nvlink_peers=peers))
    assert spec.name == expected
    assert len(warnings) == 1 and "SXM or PCIe" in warnings[0]


def test_similar_names_do_not_match_the_wrong_card() -> None:
    assert catalog_entry(_gpu("NVIDIA RTX A1000", 8192, (8, 6)))[0].name == "RTX-A1000"
    assert catalog_entry(_gpu("NVIDIA L40", 46068, (8, 9)))[0].name == "L40"
    assert catalog_entry(_gpu("NVIDIA A10", 23028, (8, 6)))[0].name == "A10"
    assert catalog_entry(fake_gpu("h100-nvl"))[0].name == "H100-NVL"


def test_memory_far_from_the_catalog_figure_warns() -> None:
    spec, warnings = catalog_entry(fake_gpu("v100-sxm2-32gb"))
    assert spec.name == "V100"
    assert any("31.7 GiB" in w and "15.8 GiB" in w for w in warnings)
    assert catalog_entry(fake_gpu("v100-sxm2-16gb"))[1] == []


@pytest.mark.parametrize("card", sorted(UNLISTED_CARDS))
def test_unknown_gpu_gets_a_spec_from_nvml_and_warnings(card: str) -> None:
    gpu = fake_gpu(card)
    spec, warnings = catalog_entry(gpu)
    assert spec.name not in ACCELERATORS
    assert spec.memory_gib == pytest.approx(gpu.memory_total_bytes / 2**30, abs=0.05)
    assert not spec.calibrated
    assert spec.ray_type == ray_accelerator_type(gpu)
    assert "placeholder" in spec.price_source
    assert any(w.startswith(f"unknown GPU {gpu.name!r}; using a spec derived from NVML: memory")
               and "compute capability" in w for w in warnings)
    assert any("--price" in w for w in warnings)


def test_unknown_gpu_names_and_capabilities() -> None:
    a6000, _ = catalog_entry(fake_gpu("rtx-a6000"))
    assert (a6000.name, a6000.supports_bf16, a6000.fp8_tflops) == ("RTX-A6000", True, None)
    h20, _ = catalog_entry(fake_gpu("h20"))
    assert (h20.name, h20.fp8_tflops is not None) == ("H20", True)
    p40, _ = catalog_entry(_gpu("Tesla P40", 23040, (6, 1)))
    assert (p40.name, p40.supports_bf16) == ("P40", False)


@pytest.mark.parametrize(
    "gpu",
    [
        _gpu("", 1024, (0, 0)),
        _gpu("NVIDIA", 1024, (99, 9)),
        _gpu("Some Future Accelerator 9000", 300_000, (13, 0), nvlink_peers=(1,)),
        _gpu("AMD Instinct MI250X", 65520, (9, 0)),
    ],
    ids=["empty", "bare-vendor", "future", "amd-unlisted"],
)
def test_catalog_entry_never_raises(gpu: GpuInfo) -> None:
    spec, warnings = catalog_entry(gpu)
    assert spec.kind is AcceleratorKind.GPU and spec.name
    assert warnings


def test_a_derived_spec_works_in_the_performance_model() -> None:
    spec, _ = catalog_entry(fake_gpu("rtx-a6000"))
    perf = replica_performance(catalog_model("llama-3.1-8b").architecture, Dtype.BF16, spec)
    assert perf.fits
    assert perf.decode_step_seconds(1, 1024) > 0


def test_mig_surfaces_in_info_and_warnings() -> None:
    (gpu,) = fake.mig_a100_node()
    assert gpu.mig_enabled
    spec, warnings = catalog_entry(gpu)
    assert spec.name == "A100-40GB"
    assert any("MIG enabled" in w for w in warnings)
    assert catalog_entry(replace(gpu, mig_enabled=False))[1] == []


# --- Ray naming ------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "ray_type"), sorted(RAY_TABLE.items()))
def test_ray_type_matches_the_ecosystem_table(name: str, ray_type: str) -> None:
    assert ray_accelerator_type(_gpu(name, 81920)) == ray_type


@pytest.mark.parametrize("card", sorted([*CARDS, *UNLISTED_CARDS]))
def test_ray_type_matches_rays_own_function(card: str) -> None:
    gpu = fake_gpu(card)
    ray_type = ray_accelerator_type(gpu)
    assert ray_type == NvidiaGPUAcceleratorManager._gpu_name_to_accelerator_type(gpu.name)
    if card in CARDS:
        assert catalog_entry(gpu)[0].ray_type == ray_type


# --- NVLink and nodes ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gpus", "islands"),
    [
        (fake.hgx_h100_node(), ((0, 1, 2, 3, 4, 5, 6, 7),)),
        (fake.l4_node(), ((0,), (1,), (2,), (3,))),
        (fake.bridged_a100_pcie_node(), ((0, 1), (2, 3))),
        (fake.mig_a100_node(), ((0,),)),
        ([fake_gpu("l4", 0, nvlink_peers=(2,)), fake_gpu("l4", 1), fake_gpu("l4", 2)],
         ((0, 2), (1,))),
    ],
    ids=["hgx-h100", "4xl4", "bridged-pairs", "mig", "one-sided-report"],
)
def test_nvlink_islands(gpus: list[GpuInfo], islands: tuple[tuple[int, ...], ...]) -> None:
    assert nvlink_islands(gpus) == islands


def test_describe_hgx_node() -> None:
    node = describe_gpus(FakeGpuProbe(fake.hgx_h100_node()))
    assert node is not None
    assert (node.accelerator.name, node.ray_type, node.count) == ("H100-SXM", "H100", 8)
    assert node.largest_nvlink_island == 8
    assert node.warnings == ()


def test_describe_l4_node() -> None:
    node = describe_gpus(FakeGpuProbe(fake.l4_node()))
    assert node is not None
    assert (node.accelerator.name, node.count, node.largest_nvlink_island) == ("L4", 4, 1)
    assert node.warnings == ()


def test_describe_split_nvlink_warns_when_the_entry_assumes_nvlink() -> None:
    node = describe_gpus(FakeGpuProbe(fake.bridged_a100_pcie_node()))
    assert node is not None and node.largest_nvlink_island == 2
    assert any("largest NVLink island here has 2 of 4" in w for w in node.warnings)


def test_describe_heterogeneous_node_uses_the_most_common_type() -> None:
    gpus = [fake_gpu("l4", 0), fake_gpu("a100-sxm4-80gb", 1, nvlink_peers=(2,)),
            fake_gpu("a100-sxm4-80gb", 2, nvlink_peers=(1,))]
    node = describe_gpus(FakeGpuProbe(gpus))
    assert node is not None
    assert (node.accelerator.name, node.count, len(node.gpus)) == ("A100-80GB", 2, 3)
    (warning,) = node.warnings
    assert "1x L4 (GPU 0)" in warning and "CUDA_VISIBLE_DEVICES=1,2" in warning


def test_describe_tie_goes_to_the_lowest_index() -> None:
    node = describe_gpus(FakeGpuProbe([fake_gpu("t4", 0), fake_gpu("l4", 1)]))
    assert node is not None and (node.accelerator.name, node.count) == ("T4", 1)


def test_describe_no_gpus_is_none_and_unavailable_propagates() -> None:
    assert describe_gpus(FakeGpuProbe([])) is None
    with pytest.raises(GpuProbeUnavailable):
        describe_gpus(FakeGpuProbe([], error=GpuProbeUnavailable("no driver")))


def test_describe_deduplicates_warnings() -> None:
    node = describe_gpus(FakeGpuProbe(fake_node("rtx-a6000", 4)))
    assert node is not None and node.count == 4
    assert len(node.warnings) == len(set(node.warnings)) == 2


# --- the NVML probe --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gpus", "nvswitch"),
    [
        (fake.hgx_h100_node(), True),
        (fake.hgx_h100_node(), False),
        (fake.l4_node(), False),
        (fake.bridged_a100_pcie_node(), False),
        (fake.mig_a100_node(), False),
        ([], False),
    ],
    ids=["hgx-nvswitch", "hgx-direct", "4xl4", "bridged-pairs", "mig", "no-gpus"],
)
def test_nvml_probe_reads_back_what_fake_nvml_serves(
    gpus: list[GpuInfo], nvswitch: bool
) -> None:
    nvml = FakeNvml(gpus, nvswitch=nvswitch, driver_version="570.86.15")
    probe = NvmlGpuProbe(nvml)
    assert probe.gpus() == gpus
    assert probe.driver_version() == "570.86.15"
    assert nvml.sessions == 0


def test_nvml_probe_matches_legacy_pci_addresses() -> None:
    class LegacyAddresses(FakeNvml):
        def nvmlDeviceGetNvLinkRemotePciInfo(self, handle: object, link: int) -> fake._PciInfo:
            remote = super().nvmlDeviceGetNvLinkRemotePciInfo(handle, link)
            return fake._PciInfo(busId=remote.busId.lower().removeprefix("0000"))

    gpus = fake.bridged_a100_pcie_node()
    assert NvmlGpuProbe(LegacyAddresses(gpus)).gpus() == gpus


def test_nvml_probe_without_pynvml_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError
    probe = NvmlGpuProbe()
    with pytest.raises(GpuProbeUnavailable, match="nvidia-ml-py"):
        probe.gpus()
    with pytest.raises(GpuProbeUnavailable, match="nvidia-ml-py"):
        probe.driver_version()


def test_nvml_probe_without_driver_is_unavailable() -> None:
    nvml = FakeNvml([], init_error=FakeNvmlLibraryNotFound("NVML Shared Library Not Found"))
    with pytest.raises(GpuProbeUnavailable, match="did not initialise.*Library Not Found.*driver"):
        NvmlGpuProbe(nvml).gpus()
    assert nvml.sessions == 0


def test_nvml_failure_mid_read_is_unavailable_and_closes_the_session() -> None:
    class LostGpu(FakeNvml):
        def nvmlDeviceGetMemoryInfo(self, handle: object) -> fake._Memory:
            raise FakeNvmlError("GPU is lost")

    nvml = LostGpu(fake.l4_node())
    with pytest.raises(GpuProbeUnavailable, match="GPU is lost"):
        NvmlGpuProbe(nvml).gpus()
    assert nvml.sessions == 0


def _probes() -> list[object]:
    node = fake.hgx_h100_node()
    return [
        pytest.param(FakeGpuProbe(node), id="fake"),
        pytest.param(NvmlGpuProbe(FakeNvml(node, nvswitch=True)), id="nvml-over-fake-nvml"),
        pytest.param(NvmlGpuProbe(), id="nvml-this-machine"),
    ]


@pytest.mark.parametrize("probe", _probes())
def test_probe_contract(probe: GpuProbe) -> None:
    """Every probe: GPUs in index order, symmetric peers, sane memory; or GpuProbeUnavailable."""
    try:
        gpus = probe.gpus()
        driver = probe.driver_version()
    except GpuProbeUnavailable as exc:
        assert str(exc)
        return
    assert driver is None or driver
    assert [gpu.index for gpu in gpus] == list(range(len(gpus)))
    indices = set(range(len(gpus)))
    for gpu in gpus:
        assert gpu.name and gpu.uuid and gpu.pci_bus_id
        assert 0 <= gpu.memory_free_bytes <= gpu.memory_total_bytes
        assert set(gpu.nvlink_peers) <= indices - {gpu.index}
        assert all(gpu.index in gpus[peer].nvlink_peers for peer in gpu.nvlink_peers)
