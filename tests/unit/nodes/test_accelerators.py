"""The accelerator catalog: required entries, alias lookup, CPU nodes, errors that suggest names."""

from __future__ import annotations

import pytest

from nodes.accelerators import (
    ACCELERATORS,
    AcceleratorKind,
    accelerator,
    cpu_accelerator,
)
from scheduler.errors import CatalogError

REQUIRED = (
    "A100-40GB", "A100-80GB", "H100-SXM", "H100-PCIe", "H200", "B200", "L40S", "L4", "A10G",
    "T4", "V100", "RTX-4090", "MI300X", "CPU",
)
RAY_TYPES = {
    "H100", "A100", "L4", "A10G", "T4", "V100", "L40S", "H200", "B200", "GeForce-RTX-4090",
    "AMD-Instinct-MI300X-OAM",
}


@pytest.mark.parametrize("name", REQUIRED)
def test_required_entry_has_positive_figures(name: str) -> None:
    spec = ACCELERATORS[name]
    assert spec.name == name
    assert spec.memory_gib > 0 and spec.memory_bandwidth_gbps > 0 and spec.bf16_tflops > 0
    assert spec.default_price_per_hour > 0 and spec.price_source
    assert (spec.ray_type is None) == (spec.kind is AcceleratorKind.CPU)


def test_ray_types_are_rays_accelerator_names() -> None:
    assert {s.ray_type for s in ACCELERATORS.values() if s.ray_type} == RAY_TYPES


@pytest.mark.parametrize(
    ("name", "spec_name", "memory_gib", "bandwidth", "bf16"),
    [
        ("A100-40GB", "A100-40GB", 39.4, 1555, 312),
        ("H100-SXM", "H100-SXM", 79.1, 3350, 989),
        ("H200", "H200", 139.8, 4800, 989),
        ("L4", "L4", 22.0, 300, 121),
        ("L40S", "L40S", 44.5, 864, 362),
        ("MI300X", "MI300X", 191.7, 5300, 1307),
    ],
)
def test_spec_sheet_figures(
    name: str, spec_name: str, memory_gib: float, bandwidth: float, bf16: float
) -> None:
    spec = accelerator(name)
    assert (spec.name, spec.memory_gib, spec.memory_bandwidth_gbps, spec.bf16_tflops) == (
        spec_name, memory_gib, bandwidth, bf16,
    )


@pytest.mark.parametrize("name", ["T4", "V100"])
def test_pre_ampere_cards_have_no_bf16(name: str) -> None:
    assert not ACCELERATORS[name].supports_bf16


@pytest.mark.parametrize(
    ("alias", "expected"),
    [
        ("h100", "H100-SXM"),
        ("H100-SXM5", "H100-SXM"),
        ("A100-80G", "A100-80GB"),
        ("a100 80gb", "A100-80GB"),
        ("a100_40gb", "A100-40GB"),
        ("l40s", "L40S"),
        ("GeForce-RTX-4090", "RTX-4090"),
        ("rtx 4090", "RTX-4090"),
        ("AMD-Instinct-MI300X-OAM", "MI300X"),
        ("cpu", "CPU"),
    ],
)
def test_lookup_accepts_aliases_and_ignores_case(alias: str, expected: str) -> None:
    assert accelerator(alias).name == expected


@pytest.mark.parametrize(
    ("name", "suggested"),
    [
        ("A100", ["A100-40GB", "A100-80GB"]),
        ("H10O", ["H100-SXM"]),
        ("L40", ["L40S"]),
    ],
)
def test_unknown_name_suggests_close_matches(name: str, suggested: list[str]) -> None:
    with pytest.raises(CatalogError) as caught:
        accelerator(name)
    message = str(caught.value)
    hint, _, valid = message.partition("Valid names:")
    assert all(s in hint for s in suggested), message
    assert all(n in valid for n in REQUIRED)


def test_catalog_is_read_only() -> None:
    with pytest.raises(TypeError):
        ACCELERATORS["X"] = ACCELERATORS["L4"]  # type: ignore[index]


@pytest.mark.parametrize(
    ("cores", "bandwidth"),
    [(2, 20.0), (4, 40.0), (16, 100.0), (64, 100.0)],
)
def test_cpu_bandwidth_is_10_gbps_per_core_capped_at_100(cores: int, bandwidth: float) -> None:
    node = cpu_accelerator(cores, memory_gib=32.0)
    assert node.memory_bandwidth_gbps == bandwidth
    assert node.bf16_tflops == pytest.approx(0.1 * cores)
    assert node.kind is AcceleratorKind.CPU and node.cores == cores and node.name == "CPU"


def test_cpu_overrides_win() -> None:
    node = cpu_accelerator(8, memory_gib=32.0, memory_bandwidth_gbps=55.0, price_per_hour=0.2)
    assert (node.memory_bandwidth_gbps, node.default_price_per_hour) == (55.0, 0.2)
    assert node.price_source == "operator"


def test_default_cpu_node_is_16_cores_64_gib() -> None:
    node = ACCELERATORS["CPU"]
    assert (node.cores, node.memory_gib) == (16, 64.0)


@pytest.mark.parametrize(("cores", "memory"), [(0, 8.0), (4, 0.0)])
def test_cpu_node_rejects_nonsense(cores: int, memory: float) -> None:
    with pytest.raises(ValueError):
        cpu_accelerator(cores, memory)
