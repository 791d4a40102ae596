"""Node objects read into inventory: GPU Feature Discovery labels give the accelerator, the
``gearshift.dev/`` annotations give price and capacity type. Pure.

A Node whose GPU the catalog lacks gets a spec derived from its labels (memory from
``nvidia.com/gpu.memory``, speed from its compute capability's family) and a warning; a missing
or invalid annotation gets a default and a sentence saying which. Nothing here raises on a bad
Node: every "no" is a note the operator reads in ``gearshift status -o json`` (``plan_notes``).

``enriched_labels`` then rewrites a Ray node's Gearshift labels (accelerator, memory, price,
ownership) from the Node its pod runs on, named by the ``gearshift.io/kubernetes-node`` label.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from nodes.accelerators import ACCELERATORS, AcceleratorKind, AcceleratorSpec, accelerator
from nodes.discovery.gpu import GpuInfo
from nodes.discovery.gpu_catalog import catalog_entry, derived_spec
from scheduler.config import WorkerGroupScaling
from scheduler.errors import CatalogError
from scheduler.kubernetes.api import KubeNode
from scheduler.types import (
    LABEL_ACCELERATOR,
    LABEL_ACCELERATOR_MEMORY_GIB,
    LABEL_GROUP,
    LABEL_NODE_ID,
    LABEL_OWNERSHIP,
    LABEL_PRICE_PER_HOUR,
    Ownership,
)

LABEL_GPU_PRODUCT = "nvidia.com/gpu.product"
LABEL_GPU_MEMORY_MIB = "nvidia.com/gpu.memory"
LABEL_GPU_COUNT = "nvidia.com/gpu.count"
LABEL_GPU_FAMILY = "nvidia.com/gpu.family"
LABEL_GPU_COMPUTE_MAJOR = "nvidia.com/gpu.compute.major"
LABEL_GPU_COMPUTE_MINOR = "nvidia.com/gpu.compute.minor"
ANNOTATION_PRICE = "gearshift.dev/price-per-hour"
"""Dollars per hour for the whole Node; a pod is charged its share of the Node's GPUs."""
ANNOTATION_CAPACITY_TYPE = "gearshift.dev/capacity-type"
"""``on-demand``, ``spot`` or ``owned``."""
LABEL_KUBERNETES_NODE = "gearshift.io/kubernetes-node"
"""Ray node label naming the Node its pod runs on (the chart sets it from ``spec.nodeName``)."""

# Capacity-type labels that provisioners set, read when the annotation is absent.
_CAPACITY_LABELS: dict[str, dict[str, Ownership]] = {
    "karpenter.sh/capacity-type": {"spot": Ownership.SPOT, "on-demand": Ownership.ON_DEMAND},
    "eks.amazonaws.com/capacityType": {"SPOT": Ownership.SPOT, "ON_DEMAND": Ownership.ON_DEMAND},
    "cloud.google.com/gke-spot": {"true": Ownership.SPOT},
    "cloud.google.com/gke-preemptible": {"true": Ownership.SPOT},
    "kubernetes.azure.com/scalesetpriority": {"spot": Ownership.SPOT},
}
# Compute capability by GFD family, for unknown GPUs whose Node lacks the compute labels.
_FAMILY_CAPABILITY: dict[str, tuple[int, int]] = {
    "volta": (7, 0),
    "turing": (7, 5),
    "ampere": (8, 0),
    "ada-lovelace": (8, 9),
    "hopper": (9, 0),
    "blackwell": (10, 0),
}
_MIB = 2**20
_MEMORY_TOLERANCE = 0.10


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """What one Node contributes to the inventory.

    Invariants: ``gpu_count`` is 0 exactly when ``accelerator`` is None and the Node has no
    ``nvidia.com/gpu.product`` label; ``price_per_hour`` is None only for Nodes without GPUs
    and without a price annotation.
    """

    name: str
    accelerator: AcceleratorSpec | None
    """The catalog entry of its GPUs, or a spec derived from its labels (``cataloged`` False)."""
    gpu_count: int
    price_per_hour: float | None
    """The whole Node, dollars per hour."""
    ownership: Ownership
    warnings: tuple[str, ...] = ()
    """Labels or annotations the operator should fix."""
    defaults: tuple[str, ...] = ()
    """Defaults used for missing annotations, one sentence each."""

    @property
    def cataloged(self) -> bool:
        return self.accelerator is not None and ACCELERATORS.get(self.accelerator.name) is not None


@dataclass(frozen=True, slots=True)
class NodeInventory:
    """Every Node, by name."""

    nodes: Mapping[str, NodeInfo] = field(default_factory=dict)

    @property
    def warnings(self) -> tuple[str, ...]:
        return tuple(warning for node in self.nodes.values() for warning in node.warnings)

    def summary(self) -> tuple[str, ...]:
        """Notes for operators: every warning, and one line per kind of default used."""
        by_default: dict[str, list[str]] = {}
        for node in self.nodes.values():
            for default in node.defaults:
                by_default.setdefault(default.split(": ", 1)[-1], []).append(node.name)
        lines = [*self.warnings]
        for default, names in sorted(by_default.items()):
            shown = ", ".join(sorted(names)[:3]) + (", …" if len(names) > 3 else "")
            lines.append(f"{len(names)} Node(s) ({shown}): {default}")
        return tuple(lines)


def read_inventory(nodes: Iterable[KubeNode]) -> NodeInventory:
    return NodeInventory({node.name: read_node(node) for node in nodes})


def read_node(node: KubeNode) -> NodeInfo:
    """The Node's GPUs (from GFD labels), price and capacity type (from annotations)."""
    warnings: list[str] = []
    defaults: list[str] = []
    spec, count = _gpus(node, warnings)
    price = _price(node, spec, count, warnings, defaults)
    ownership = _ownership(node, warnings, defaults)
    return NodeInfo(node.name, spec, count, price, ownership, tuple(warnings), tuple(defaults))


def _gpus(node: KubeNode, warnings: list[str]) -> tuple[AcceleratorSpec | None, int]:
    product = node.labels.get(LABEL_GPU_PRODUCT)
    if not product:
        return None, 0
    count = _positive_int(node.labels.get(LABEL_GPU_COUNT))
    if count is None:
        warnings.append(
            f"Node {node.name}: {LABEL_GPU_COUNT} is {node.labels.get(LABEL_GPU_COUNT)!r}, not "
            "a GPU count; counting 1"
        )
        count = 1
    memory_mib = _positive_int(node.labels.get(LABEL_GPU_MEMORY_MIB))
    shared = product.endswith("-SHARED")
    if shared:
        product = product.removesuffix("-SHARED")
        warnings.append(
            f"Node {node.name}: its {product} GPUs are shared (time-slicing or MPS); engines "
            "get a share of each GPU, not the whole GPU the plan assumes"
        )
    # GFD turns NVML's spaces into dashes; the catalog's rules read NVML's names.
    info = GpuInfo(
        index=0,
        uuid="",
        name=product.replace("-", " "),
        memory_total_bytes=(memory_mib or 0) * _MIB,
        memory_free_bytes=(memory_mib or 0) * _MIB,
        compute_capability=_capability(node),
        mig_enabled=False,
        nvlink_peers=(),
        pci_bus_id="",
    )
    mig = "-MIG-" in product
    try:
        spec, notes = (None, []) if mig else catalog_entry(info)
    except ValueError:  # not in the catalog, and no memory label to derive a spec from
        spec, notes = None, []
    if spec is not None and spec.name in ACCELERATORS:
        # The catalog's notes on form factors stand; its memory check reads NVML, ours GFD.
        warnings.extend(f"Node {node.name}: {note}" for note in notes if "NVML" not in note)
        if memory_mib is None:
            warnings.append(
                f"Node {node.name}: no {LABEL_GPU_MEMORY_MIB} label; taking {product} for the "
                f"catalog's {spec.name}"
            )
        elif abs(info.memory_gib - spec.memory_gib) > _MEMORY_TOLERANCE * spec.memory_gib:
            warnings.append(
                f"Node {node.name}: GFD reports {info.memory_gib:.1f} GiB per {product} but "
                f"the catalog's {spec.name} has {spec.memory_gib:.1f} GiB; plans use the "
                "catalog figure"
            )
        return spec, count
    if memory_mib is None:
        warnings.append(
            f"Node {node.name}: unknown GPU product {product!r} and no {LABEL_GPU_MEMORY_MIB} "
            "label; its pods keep the accelerator their worker group declares"
        )
        return None, count
    spec, _ = derived_spec(info)  # NVML-worded warnings; ours names the Node and its labels
    major, minor = info.compute_capability
    warnings.append(
        f"Node {node.name}: GPU product {product!r} is "
        f"{'a MIG slice' if mig else 'not in the catalog'}; using a spec from its labels "
        f"({spec.name}, {spec.memory_gib:.1f} GiB, the speed of compute capability "
        f"{major}.{minor}, roofline only); its pods are planned as their worker group's "
        "accelerator"
    )
    return spec, count


def _capability(node: KubeNode) -> tuple[int, int]:
    major = _positive_int(node.labels.get(LABEL_GPU_COMPUTE_MAJOR))
    minor = node.labels.get(LABEL_GPU_COMPUTE_MINOR, "0")
    if major is not None and minor.isdigit():
        return major, int(minor)
    return _FAMILY_CAPABILITY.get(node.labels.get(LABEL_GPU_FAMILY, ""), (8, 0))


def _price(
    node: KubeNode,
    spec: AcceleratorSpec | None,
    count: int,
    warnings: list[str],
    defaults: list[str],
) -> float | None:
    text = node.annotations.get(ANNOTATION_PRICE)
    if text is not None:
        price = _price_value(text)
        if price is not None:
            return price
    if spec is None:
        fallback, what = None, "its pods keep their worker group's price"
    else:
        fallback = spec.default_price_per_hour * count
        what = f"catalog price of its GPUs ({count} x {spec.name})"
    if text is None:
        defaults.append(f"Node {node.name}: no {ANNOTATION_PRICE}: {what}")
    else:
        warnings.append(
            f"Node {node.name}: {ANNOTATION_PRICE} is {text!r}, not dollars per hour (a number "
            f">= 0); instead: {what}"
        )
    return fallback


def _price_value(text: str) -> float | None:
    try:
        value = float(text.strip().removeprefix("$"))
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def _ownership(node: KubeNode, warnings: list[str], defaults: list[str]) -> Ownership:
    text = node.annotations.get(ANNOTATION_CAPACITY_TYPE)
    if text is not None:
        try:
            return Ownership(text.strip().lower())
        except ValueError:
            pass
    fallback, what = Ownership.ON_DEMAND, "on-demand"
    for label, values in _CAPACITY_LABELS.items():
        if node.labels.get(label, "") in values:
            fallback = values[node.labels[label]]
            what = f"{fallback.value} (label {label})"
            break
    if text is not None:
        warnings.append(
            f"Node {node.name}: {ANNOTATION_CAPACITY_TYPE} is {text!r}, not one of "
            f"{', '.join(o.value for o in Ownership)}; instead: {what}"
        )
    elif what == "on-demand":  # neither the annotation nor a provisioner label
        defaults.append(f"Node {node.name}: no {ANNOTATION_CAPACITY_TYPE}: on-demand")
    return fallback


def _positive_int(text: str | None) -> int | None:
    if text is None or not text.strip().isdigit():
        return None
    value = int(text)
    return value if value > 0 else None


# ------------------------------------------------------------------------------ enrichment


def enriched_labels(
    labels: Mapping[str, str],
    gpus: int,
    inventory: NodeInventory,
    worker_groups: Sequence[WorkerGroupScaling] = (),
) -> dict[str, str]:
    """A Gearshift Ray node's labels with what Kubernetes knows about it; others unchanged.

    ``gpus`` is the node's Ray ``GPU`` resource (the pod's GPUs). The accelerator is the Node's
    catalog entry when its GFD labels name one (else the worker group's, else the label's);
    memory is that accelerator's catalog figure; the price is the worker group's
    ``price_per_pod_hour``, else the pod's share of its Node's price (GPUs on the pod / GPUs
    on the Node; a pod on a Node without GPUs pays the whole Node), else the label's, else the
    catalog's; ownership is the Node's capacity type, else the label's, else the worker
    group's.
    """
    if LABEL_NODE_ID not in labels:
        return dict(labels)
    result = dict(labels)
    node = inventory.nodes.get(labels.get(LABEL_KUBERNETES_NODE, ""))
    group = next((g for g in worker_groups if g.name == labels.get(LABEL_GROUP)), None)
    if node is not None and node.cataloged and node.accelerator is not None and gpus > 0:
        result[LABEL_ACCELERATOR] = node.accelerator.name
    elif group is not None and LABEL_ACCELERATOR not in labels:
        result[LABEL_ACCELERATOR] = group.accelerator
    if LABEL_ACCELERATOR not in result:
        return result
    spec = _catalog_spec(result[LABEL_ACCELERATOR])
    if spec is None:
        return result
    if spec.kind is AcceleratorKind.GPU or LABEL_ACCELERATOR_MEMORY_GIB not in result:
        result[LABEL_ACCELERATOR_MEMORY_GIB] = f"{spec.memory_gib:g}"
    price = _pod_price(node, group, gpus)
    if price is not None:
        result[LABEL_PRICE_PER_HOUR] = f"{price:g}"
    elif LABEL_PRICE_PER_HOUR not in result:
        result[LABEL_PRICE_PER_HOUR] = f"{spec.default_price_per_hour * max(gpus, 1):g}"
    if node is not None:
        result[LABEL_OWNERSHIP] = node.ownership.value
    else:
        ownership = group.ownership if group is not None else Ownership.ON_DEMAND
        result.setdefault(LABEL_OWNERSHIP, ownership.value)
    return result


def _pod_price(node: NodeInfo | None, group: WorkerGroupScaling | None, gpus: int) -> float | None:
    if group is not None and group.price_per_pod_hour is not None:
        return group.price_per_pod_hour
    if node is None or node.price_per_hour is None:
        return None
    if node.gpu_count == 0 or gpus == 0:
        return node.price_per_hour
    return node.price_per_hour * min(gpus, node.gpu_count) / node.gpu_count


def _catalog_spec(name: str) -> AcceleratorSpec | None:
    try:
        return accelerator(name)
    except CatalogError:  # a label naming no catalog entry: leave the labels as they are
        return None
