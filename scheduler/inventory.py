"""Nodes as Ray sees them: what a configured node declares, and how a Ray node reads back.

Pure functions between config, Ray resource/label dictionaries and ``NodeView``. Ray cannot
tell an A100-40GB from an A100-80GB (both are ``accelerator_type:A100``), so memory, price,
ownership and the catalog name travel in Gearshift's own labels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from nodes.accelerators import AcceleratorSpec
from scheduler.config import CpuSpec, GearshiftConfig, NodeGroup
from scheduler.framework.placement import NodeView
from scheduler.placement.shapes import group_accelerator
from scheduler.types import (
    LABEL_ACCELERATOR,
    LABEL_ACCELERATOR_MEMORY_GIB,
    LABEL_CPU_CORES,
    LABEL_GROUP,
    LABEL_NODE_ID,
    LABEL_OWNERSHIP,
    LABEL_PRICE_PER_HOUR,
    LABEL_ROLE,
    LABEL_SIMULATED,
    Ownership,
)

CPU_SLOT_RESOURCE = "gearshift_cpu_engine_slot"
"""Custom Ray resource a CPU node offers once per engine it can host."""

ROLE_HEAD = "head"
ROLE_WORKER = "worker"


@dataclass(frozen=True, slots=True)
class NodeDeclaration:
    """What one node tells Ray about itself."""

    node_id: str
    num_cpus: int
    num_gpus: int
    resources: dict[str, float] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)


def declare_node(
    node_id: str,
    group: str,
    spec: AcceleratorSpec,
    count: int,
    price_per_hour: float,
    ownership: Ownership,
    *,
    simulated: bool,
    labels: Mapping[str, str] | None = None,
    role: str = ROLE_WORKER,
) -> NodeDeclaration:
    """What one node declares: ``count`` accelerators of ``spec`` (GPU count, Ray's
    ``accelerator_type:<T>`` resource) or a CPU engine slot, and Gearshift's labels."""
    declared = {
        **(labels or {}),
        LABEL_NODE_ID: node_id,
        LABEL_GROUP: group,
        LABEL_ACCELERATOR: spec.name,
        LABEL_ACCELERATOR_MEMORY_GIB: f"{spec.memory_gib:g}",
        LABEL_PRICE_PER_HOUR: f"{price_per_hour:g}",
        LABEL_OWNERSHIP: ownership.value,
        LABEL_SIMULATED: "true" if simulated else "false",
        LABEL_ROLE: role,
    }
    if spec.ray_type is None:
        if spec.cores is not None:
            declared[LABEL_CPU_CORES] = str(spec.cores)
        return NodeDeclaration(node_id, 1, 0, {CPU_SLOT_RESOURCE: 1.0}, declared)
    declared["ray.io/accelerator-type"] = spec.ray_type
    resources = {f"accelerator_type:{spec.ray_type}": 1.0}
    return NodeDeclaration(node_id, 1, count, resources, declared)


def declare_group(group: NodeGroup) -> list[NodeDeclaration]:
    """One declaration per node of a configured group."""
    spec = group_accelerator(group)
    return [
        declare_node(
            node_id,
            group.name,
            spec,
            group.accelerators_per_node,
            group.node_price_per_hour(),
            group.ownership,
            simulated=group.simulated,
            labels=group.labels,
        )
        for node_id in group.node_ids()
    ]


def groups_of_joined_nodes(config: GearshiftConfig, nodes: Sequence[NodeView]) -> list[NodeGroup]:
    """Node groups for nodes that joined with `gearshift node start` and are not in the
    config, rebuilt from their labels so the planner can reason about them like any group."""
    known = {group.name for group in config.fleet.node_groups}
    members: dict[str, list[NodeView]] = {}
    for node in nodes:
        if node.group not in known:
            members.setdefault(node.group, []).append(node)
    groups = []
    for name, views in sorted(members.items()):
        first = views[0]
        cores = first.labels.get(LABEL_CPU_CORES)
        cpu = (
            CpuSpec(cores=int(cores), memory_gib=first.accelerator_memory_gib)
            if cores is not None and first.accelerator == "CPU"
            else None
        )
        groups.append(
            NodeGroup(
                name=name,
                accelerator=first.accelerator,
                accelerators_per_node=first.accelerator_count if cpu is None else 1,
                nodes=len(views),
                price_per_node_hour=first.price_per_hour,
                ownership=first.ownership,
                simulated=first.labels.get(LABEL_SIMULATED) == "true",
                cpu=cpu,
            )
        )
    return groups


def declare_fleet(config: GearshiftConfig) -> list[NodeDeclaration]:
    return [decl for group in config.fleet.node_groups for decl in declare_group(group)]


def declared_node_views(config: GearshiftConfig) -> list[NodeView]:
    """Every node ``config`` declares, alive, as the controller would read it back from Ray
    (for planning offline: ``gearshift plan``, ``gearshift simulate``)."""
    views = (
        node_view(d.labels, {"GPU": d.num_gpus, **d.resources}, alive=True)
        for d in declare_fleet(config)
    )
    return [view for view in views if view is not None]


def node_view(
    labels: Mapping[str, str], resources: Mapping[str, float], alive: bool
) -> NodeView | None:
    """A ``NodeView`` for a Ray node carrying Gearshift labels; None for the head and for
    nodes Gearshift did not declare."""
    if labels.get(LABEL_ROLE) != ROLE_WORKER or LABEL_NODE_ID not in labels:
        return None
    gpus = int(resources.get("GPU", 0))
    cpu_slots = int(resources.get(CPU_SLOT_RESOURCE, 0))
    try:
        return NodeView(
            node_id=labels[LABEL_NODE_ID],
            group=labels.get(LABEL_GROUP, labels[LABEL_NODE_ID]),
            accelerator=labels[LABEL_ACCELERATOR],
            accelerator_count=gpus if gpus else max(cpu_slots, 1),
            accelerator_memory_gib=float(labels[LABEL_ACCELERATOR_MEMORY_GIB]),
            price_per_hour=float(labels[LABEL_PRICE_PER_HOUR]),
            ownership=Ownership(labels[LABEL_OWNERSHIP]),
            alive=alive,
            labels=dict(labels),
        )
    except (KeyError, ValueError):
        return None
