"""Node objects into inventory: GPU Feature Discovery labels, price and capacity-type
annotations, and the Ray node labels they enrich.

Pins: GFD product names map to catalog entries; an unknown product gets a warning and a spec
from its labels; a missing annotation gets a default and a sentence naming it; an invalid one
a warning and the default; provisioners' capacity-type labels stand in for the annotation; a
pod is charged its share of its Node's price; a Ray node then reads back as a ``NodeView``.
"""

from __future__ import annotations

import pytest

from scheduler.config import WorkerGroupScaling
from scheduler.inventory import node_view
from scheduler.kubernetes.api import KubeNode
from scheduler.kubernetes.node_inventory import (
    ANNOTATION_CAPACITY_TYPE,
    ANNOTATION_PRICE,
    LABEL_KUBERNETES_NODE,
    NodeInventory,
    enriched_labels,
    read_inventory,
    read_node,
)
from scheduler.types import (
    LABEL_ACCELERATOR,
    LABEL_GROUP,
    LABEL_NODE_ID,
    LABEL_OWNERSHIP,
    LABEL_PRICE_PER_HOUR,
    LABEL_ROLE,
    Ownership,
)


def gpu_node(
    product: str,
    memory_mib: int | None,
    count: str = "8",
    annotations: dict[str, str] | None = None,
    **labels: str,
) -> KubeNode:
    gfd = {"nvidia.com/gpu.product": product, "nvidia.com/gpu.count": count}
    if memory_mib is not None:
        gfd["nvidia.com/gpu.memory"] = str(memory_mib)
    return KubeNode("node-a", {**gfd, **labels}, annotations or {})


PRICED = {ANNOTATION_PRICE: "20", ANNOTATION_CAPACITY_TYPE: "on-demand"}


@pytest.mark.parametrize(
    ("product", "memory_mib", "expected"),
    [
        ("NVIDIA-H100-80GB-HBM3", 81559, "H100-SXM"),
        ("NVIDIA-H100-PCIe", 81559, "H100-PCIe"),
        ("NVIDIA-A100-SXM4-80GB", 81920, "A100-80GB"),
        ("NVIDIA-A100-SXM4-40GB", 40960, "A100-40GB"),
        ("NVIDIA-L4", 23034, "L4"),
        ("NVIDIA-L40S", 46068, "L40S"),
        ("NVIDIA-A10G", 23028, "A10G"),
        ("Tesla-T4", 15360, "T4"),
        ("NVIDIA-H200", 143771, "H200"),
        ("NVIDIA-GeForce-RTX-4090", 24564, "RTX-4090"),
    ],
)
def test_gfd_products_map_to_catalog_entries(product: str, memory_mib: int, expected: str) -> None:
    info = read_node(gpu_node(product, memory_mib, annotations=PRICED))
    assert info.accelerator is not None and info.accelerator.name == expected
    assert info.cataloged and info.gpu_count == 8
    assert info.warnings == () and info.defaults == ()


def test_unknown_product_gets_a_warning_and_a_spec_from_its_labels() -> None:
    node = gpu_node(
        "NVIDIA-H100-NVL",
        95830,
        count="2",
        annotations=PRICED,
        **{"nvidia.com/gpu.compute.major": "9", "nvidia.com/gpu.compute.minor": "0"},
    )
    info = read_node(node)
    assert info.accelerator is not None and not info.cataloged
    assert info.accelerator.name == "H100-NVL"
    assert info.accelerator.memory_gib == pytest.approx(93.6, abs=0.1)
    assert info.accelerator.bf16_tflops == 756  # the Hopper family's figure
    assert not info.accelerator.calibrated and info.gpu_count == 2
    (warning,) = info.warnings
    assert "'NVIDIA-H100-NVL' is not in the catalog" in warning and "93.6 GiB" in warning
    assert "compute capability 9.0" in warning


def test_unknown_product_without_compute_labels_uses_its_family() -> None:
    node = gpu_node("NVIDIA-RTX-PRO-6000", 97887, **{"nvidia.com/gpu.family": "blackwell"})
    info = read_node(node)
    assert info.accelerator is not None and info.accelerator.bf16_tflops == 2250
    assert "compute capability 10.0" in info.warnings[0]


def test_unknown_product_without_memory_keeps_its_worker_groups_accelerator() -> None:
    info = read_node(gpu_node("NVIDIA-RTX-A6000", None, annotations=PRICED))
    assert info.accelerator is None and info.gpu_count == 8
    assert "no nvidia.com/gpu.memory label" in info.warnings[0]


def test_mig_and_shared_gpus_are_flagged() -> None:
    mig = read_node(gpu_node("NVIDIA-A100-SXM4-40GB-MIG-1g.5gb", 4864, annotations=PRICED))
    assert mig.accelerator is not None and not mig.cataloged
    assert "is a MIG slice" in mig.warnings[0]
    shared = read_node(gpu_node("NVIDIA-L4-SHARED", 23034, annotations=PRICED))
    assert shared.accelerator is not None and shared.accelerator.name == "L4"
    assert "shared (time-slicing or MPS)" in shared.warnings[0]


def test_memory_far_from_the_catalogs_is_a_warning() -> None:
    info = read_node(gpu_node("NVIDIA-L4", 12000, annotations=PRICED))
    assert "GFD reports 11.7 GiB per NVIDIA-L4 but the catalog's L4 has 22.0" in info.warnings[0]


def test_bad_gpu_count_counts_one() -> None:
    info = read_node(gpu_node("NVIDIA-L4", 23034, count="many", annotations=PRICED))
    assert info.gpu_count == 1 and "not a GPU count" in info.warnings[0]


@pytest.mark.parametrize(
    ("annotations", "labels", "price", "ownership", "says"),
    [
        ({ANNOTATION_PRICE: "21.5", ANNOTATION_CAPACITY_TYPE: "spot"}, {}, 21.5, Ownership.SPOT,
         ()),
        ({ANNOTATION_PRICE: "$3", ANNOTATION_CAPACITY_TYPE: "Owned"}, {}, 3.0, Ownership.OWNED,
         ()),
        ({}, {}, 8 * 0.78, Ownership.ON_DEMAND,
         ("no gearshift.dev/price-per-hour: catalog price of its GPUs (8 x L4)",
          "no gearshift.dev/capacity-type: on-demand")),
        ({ANNOTATION_PRICE: "cheap", ANNOTATION_CAPACITY_TYPE: "preemptible"}, {}, 8 * 0.78,
         Ownership.ON_DEMAND,
         ("gearshift.dev/price-per-hour is 'cheap', not dollars per hour",
          "gearshift.dev/capacity-type is 'preemptible', not one of owned, on-demand, spot")),
        ({ANNOTATION_PRICE: "-1"}, {"karpenter.sh/capacity-type": "spot"}, 8 * 0.78,
         Ownership.SPOT, ("is '-1', not dollars per hour",)),
        ({ANNOTATION_PRICE: "nan"}, {"eks.amazonaws.com/capacityType": "ON_DEMAND"}, 8 * 0.78,
         Ownership.ON_DEMAND, ("is 'nan'",)),
        ({ANNOTATION_PRICE: "4"}, {"cloud.google.com/gke-spot": "true"}, 4.0, Ownership.SPOT,
         ()),
    ],
)  # fmt: skip
def test_annotations_and_their_defaults(
    annotations: dict[str, str],
    labels: dict[str, str],
    price: float,
    ownership: Ownership,
    says: tuple[str, ...],
) -> None:
    info = read_node(gpu_node("NVIDIA-L4", 23034, annotations=annotations, **labels))
    assert info.price_per_hour == pytest.approx(price)
    assert info.ownership is ownership
    notes = [*info.warnings, *info.defaults]
    assert len(notes) == len(says)
    for note, expected in zip(notes, says, strict=True):
        assert note.startswith("Node node-a: ") and expected in note


def test_cpu_nodes_have_no_accelerator_and_no_default_price() -> None:
    info = read_node(KubeNode("cpu-1", {}, {ANNOTATION_CAPACITY_TYPE: "owned"}))
    assert (info.accelerator, info.gpu_count, info.price_per_hour) == (None, 0, None)
    assert info.defaults == (
        "Node cpu-1: no gearshift.dev/price-per-hour: its pods keep their worker group's price",
    )


def test_inventory_summary_groups_defaults() -> None:
    nodes = [KubeNode(f"cpu-{i}") for i in range(5)]
    nodes.append(gpu_node("NVIDIA-RTX-A6000", None, annotations=PRICED))
    summary = read_inventory(nodes).summary()
    assert summary[0].startswith("Node node-a: unknown GPU product")
    assert "5 Node(s) (cpu-0, cpu-1, cpu-2, …): no gearshift.dev/capacity-type: on-demand" in (
        summary
    )


# ---------------------------------------------------------------------------- enrichment

POD = {
    LABEL_ROLE: "worker",
    LABEL_NODE_ID: "llm-l4-worker-x7k2p",
    LABEL_GROUP: "l4",
    LABEL_KUBERNETES_NODE: "node-a",
}
L4_GROUP = WorkerGroupScaling(name="l4", accelerator="L4", max_replicas=8)


def inventory(*nodes: KubeNode) -> NodeInventory:
    return read_inventory(nodes)


def test_pod_gets_its_nodes_accelerator_price_share_and_capacity_type() -> None:
    node = gpu_node(
        "NVIDIA-L4", 23034, annotations={ANNOTATION_PRICE: "8", ANNOTATION_CAPACITY_TYPE: "spot"}
    )
    labels = enriched_labels(POD, 2, inventory(node), [L4_GROUP])
    view = node_view(labels, {"GPU": 2.0}, alive=True)
    assert view is not None
    assert (view.node_id, view.group, view.accelerator) == ("llm-l4-worker-x7k2p", "l4", "L4")
    assert view.accelerator_count == 2 and view.accelerator_memory_gib == 22.0
    assert view.price_per_hour == 2.0  # 2 of the Node's 8 GPUs at $8/h
    assert view.ownership is Ownership.SPOT


def test_node_gpu_overrides_the_worker_groups_guess() -> None:
    node = gpu_node("NVIDIA-A100-SXM4-80GB", 81920, annotations=PRICED)
    labels = enriched_labels({**POD, LABEL_ACCELERATOR: "A100-40GB"}, 1, inventory(node))
    assert labels[LABEL_ACCELERATOR] == "A100-80GB"


def test_worker_group_price_overrides_the_nodes() -> None:
    node = gpu_node("NVIDIA-L4", 23034, annotations=PRICED)
    group = L4_GROUP.model_copy(update={"price_per_pod_hour": 0.5})
    labels = enriched_labels(POD, 1, inventory(node), [group])
    assert labels[LABEL_PRICE_PER_HOUR] == "0.5"


def test_pod_on_an_unknown_node_falls_back_to_its_worker_group_and_the_catalog() -> None:
    labels = enriched_labels(POD, 1, inventory(), [L4_GROUP])
    assert labels[LABEL_ACCELERATOR] == "L4"
    assert labels[LABEL_PRICE_PER_HOUR] == "0.78"
    assert labels[LABEL_OWNERSHIP] == "on-demand"
    assert node_view(labels, {"GPU": 1.0}, alive=True) is not None


def test_pod_on_an_unknown_gpu_keeps_its_worker_groups_accelerator() -> None:
    node = gpu_node("NVIDIA-H100-NVL", 95830, annotations=PRICED)
    labels = enriched_labels({**POD, LABEL_GROUP: "h100"}, 1, inventory(node), [
        WorkerGroupScaling(name="h100", accelerator="H100-PCIe")
    ])  # fmt: skip
    assert labels[LABEL_ACCELERATOR] == "H100-PCIe"
    assert labels[LABEL_PRICE_PER_HOUR] == "2.5"  # 1 of 8 GPUs at $20/h


def test_labels_of_nodes_gearshift_did_not_declare_are_left_alone() -> None:
    foreign = {"ray.io/node-id": "abc", LABEL_KUBERNETES_NODE: "node-a"}
    node = gpu_node("NVIDIA-L4", 23034, annotations=PRICED)
    assert enriched_labels(foreign, 1, inventory(node), [L4_GROUP]) == foreign
