"""Nodes as Ray sees them: what a configured node declares, and how a Ray node reads back.

Pure functions between config, Ray resource/label dictionaries and ``NodeView``. Ray cannot
tell an A100-40GB from an A100-80GB (both are ``accelerator_type:A100``), so memory, price,
ownership and the catalog name travel in Gearshift's own labels.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from scheduler.config import GearshiftConfig, NodeGroup
from scheduler.framework.placement import NodeView
from scheduler.placement.shapes import group_accelerator
from scheduler.types import (
    LABEL_ACCELERATOR,
    LABEL_ACCELERATOR_MEMORY_GIB,
    LABEL_GROUP,
    LABEL_NODE_ID,
    LABEL_OWNERSHIP,
    LABEL_PRICE_PER_HOUR,
    LABEL_ROLE,
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


def declare_group(group: NodeGroup) -> list[NodeDeclaration]:
    """One declaration per node of ``group``: GPU count, accelerator resource and labels."""
    spec = group_accelerator(group)
    declarations = []
    for node_id in group.node_ids():
        labels = {
            **group.labels,
            LABEL_NODE_ID: node_id,
            LABEL_GROUP: group.name,
            LABEL_ACCELERATOR: spec.name,
            LABEL_ACCELERATOR_MEMORY_GIB: f"{spec.memory_gib:g}",
            LABEL_PRICE_PER_HOUR: f"{group.node_price_per_hour():g}",
            LABEL_OWNERSHIP: group.ownership.value,
            LABEL_ROLE: ROLE_WORKER,
        }
        if spec.ray_type is None:
            declarations.append(NodeDeclaration(node_id, 1, 0, {CPU_SLOT_RESOURCE: 1.0}, labels))
            continue
        resources = {f"accelerator_type:{spec.ray_type}": 1.0}
        labels["ray.io/accelerator-type"] = spec.ray_type
        declarations.append(
            NodeDeclaration(node_id, 1, group.accelerators_per_node, resources, labels)
        )
    return declarations


def declare_fleet(config: GearshiftConfig) -> list[NodeDeclaration]:
    return [decl for group in config.fleet.node_groups for decl in declare_group(group)]


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
