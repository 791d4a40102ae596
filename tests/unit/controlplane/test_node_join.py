"""What `gearshift node start` declares for a machine, from fake NVML and CPU data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nodes.discovery.cpu import CpuInfo, FakeCpuProbe
from nodes.discovery.fake_nvml import fake_node, hgx_h100_node
from nodes.discovery.gpu import FakeGpuProbe, GpuProbeUnavailable
from scheduler.controlplane.node_join import JoinRequest, parse_labels, plan_join
from scheduler.errors import ConfigError
from scheduler.inventory import CPU_SLOT_RESOURCE, node_view
from scheduler.types import (
    LABEL_ACCELERATOR,
    LABEL_PRICE_PER_HOUR,
    LABEL_ROLE,
    LABEL_SIMULATED,
    Ownership,
)

RAY = Path("/venv/bin/ray")
CPU = FakeCpuProbe(CpuInfo("x86_64", "Xeon", 32, 16, 256 * 2**30, frozenset({"avx2", "avx512f"})))


def _worker(**overrides: object) -> JoinRequest:
    fields: dict[str, object] = {"head": False, "address": "10.0.0.1:6379", "node_id": "box"}
    fields.update(overrides)
    return JoinRequest(**fields)  # type: ignore[arg-type]


def test_gpu_machine_declares_its_cards_and_price() -> None:
    plan = plan_join(
        _worker(price_per_hour=20.0, ownership=Ownership.SPOT, labels={"zone": "a"}),
        FakeGpuProbe(hgx_h100_node()),
        CPU,
        RAY,
    )
    declaration = plan.declaration
    assert declaration.num_gpus == 8
    assert declaration.resources == {"accelerator_type:H100": 1.0}
    assert declaration.labels[LABEL_ACCELERATOR] == "H100-SXM"
    assert declaration.labels[LABEL_PRICE_PER_HOUR] == "20"
    assert declaration.labels[LABEL_SIMULATED] == "false"
    assert declaration.labels["zone"] == "a"
    argv = plan.ray_argv
    assert argv[:3] == [str(RAY), "start", "--disable-usage-stats"]
    assert argv[argv.index("--address") + 1] == "10.0.0.1:6379"
    assert argv[argv.index("--num-gpus") + 1] == "8"
    assert json.loads(argv[argv.index("--resources") + 1]) == {"accelerator_type:H100": 1.0}
    labels = dict(item.split("=", 1) for item in argv[argv.index("--labels") + 1].split(","))
    assert labels == declaration.labels
    assert plan.env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "1"
    # Read back by the controller exactly like a configured node.
    view = node_view(declaration.labels, {"GPU": 8, **declaration.resources}, True)
    assert view is not None and (view.accelerator, view.accelerator_count) == ("H100-SXM", 8)
    assert view.group == "h100-sxm-x8"


def test_price_defaults_to_the_catalog_times_the_cards() -> None:
    plan = plan_join(_worker(), FakeGpuProbe(fake_node("l4", 4)), CPU, RAY)
    assert float(plan.declaration.labels[LABEL_PRICE_PER_HOUR]) == pytest.approx(4 * 0.78, 0.05)


def test_unknown_gpu_warns_and_still_joins() -> None:
    plan = plan_join(_worker(), FakeGpuProbe(fake_node("rtx-a6000", 2)), CPU, RAY)
    assert plan.declaration.num_gpus == 2
    assert any("--price" in warning for warning in plan.warnings)


def test_machine_without_gpus_joins_as_a_cpu_node() -> None:
    plan = plan_join(_worker(), FakeGpuProbe([], error=GpuProbeUnavailable("no driver")), CPU, RAY)
    assert plan.declaration.num_gpus == 0
    assert plan.declaration.resources == {CPU_SLOT_RESOURCE: 1.0}
    assert plan.declaration.labels[LABEL_ACCELERATOR] == "CPU"
    assert any("no GPUs used" in warning for warning in plan.warnings)


def test_head_runs_the_controller_only() -> None:
    plan = plan_join(
        JoinRequest(head=True, port=6390, node_id="head"), FakeGpuProbe(hgx_h100_node()), CPU, RAY
    )
    assert plan.declaration.labels[LABEL_ROLE] == "head"
    argv = plan.ray_argv
    assert "--head" in argv and argv[argv.index("--num-gpus") + 1] == "0"
    assert "--resources" not in argv
    assert node_view(plan.declaration.labels, {}, True) is None  # never a replica target


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (JoinRequest(head=True, address="h:1"), "exactly one of --head and --address"),
        (JoinRequest(head=False), "exactly one of --head and --address"),
    ],
)
def test_bad_requests(request_: JoinRequest, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        plan_join(request_, FakeGpuProbe([]), CPU, RAY)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", {}), ("zone=a", {"zone": "a"}), ("zone=a, rack=r7", {"zone": "a", "rack": "r7"})],
)
def test_parse_labels(text: str, expected: dict[str, str]) -> None:
    assert parse_labels(text) == expected


@pytest.mark.parametrize(
    "text", ["zone", "zo ne=a", "zone=a b", "ray.io/x=1", "gearshift.io/role=x"]
)
def test_parse_labels_rejects(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_labels(text)
