"""What the plan would use if every worker group could grow to its max. Pure.

The controller's plan covers the pods that run; to know which worker groups should grow, the
planner plans once more over those pods plus every pod each group could still add (``headroom
nodes``, priced like the group's pods), and the groups' pods that plan uses are what they need.
Running replicas keep their pods in that plan as in the real one (same hysteresis and
disruption budget), so it moves work to new pods only where the real planner would.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from scheduler.config import GearshiftConfig, NodeGroup, WorkerGroupScaling
from scheduler.framework.placement import NodeView, PlacementPlan
from scheduler.kubernetes.api import RayClusterView, WorkerGroupView
from scheduler.kubernetes.scaling import GroupScale
from scheduler.placement.shapes import group_accelerator


@dataclass(frozen=True, slots=True)
class BoundGroup:
    """A configured worker group, its entry in the RayCluster, and the bounds both allow."""

    settings: WorkerGroupScaling
    view: WorkerGroupView
    min_replicas: int
    max_replicas: int


def bound_groups(
    settings: Sequence[WorkerGroupScaling], cluster: RayClusterView
) -> tuple[list[BoundGroup], list[str]]:
    """Each configured group found in the RayCluster, bounded by the tighter of the config's
    and the RayCluster's min/max (KubeRay clamps to its own); notes for the rest."""
    groups: list[BoundGroup] = []
    notes: list[str] = []
    where = f"RayCluster {cluster.namespace}/{cluster.name}"
    for group in settings:
        view = cluster.worker_group(group.name)
        if view is None:
            notes.append(f"{group.name}: {where} has no worker group of that name; not resized")
            continue
        low = max(group.min_replicas, view.min_replicas or 0)
        high = group.max_replicas
        if view.max_replicas is not None and view.max_replicas < high:
            notes.append(
                f"{group.name}: {where} allows at most {view.max_replicas} pods "
                f"(maxReplicas), under max_replicas {high}"
            )
            high = view.max_replicas
        if low > high:
            notes.append(f"{group.name}: its minimum ({low}) is above its maximum; using {high}")
            low = high
        groups.append(BoundGroup(group, view, low, high))
    return groups, notes


def planning_config(
    config: GearshiftConfig, settings: Sequence[WorkerGroupScaling]
) -> GearshiftConfig:
    """``config`` with a node group for each worker group it does not know yet (one pod = one
    node), so the planner can size pods that do not run."""
    known = {group.name for group in config.fleet.node_groups}
    added = [worker_node_group(group) for group in settings if group.name not in known]
    if not added:
        return config
    fleet = config.fleet.model_copy(update={"node_groups": [*config.fleet.node_groups, *added]})
    return config.model_copy(update={"fleet": fleet})


def worker_node_group(group: WorkerGroupScaling) -> NodeGroup:
    return NodeGroup(
        name=group.name,
        accelerator=group.accelerator,
        accelerators_per_node=max(group.gpus_per_pod, 1),
        nodes=0,
        price_per_node_hour=group.price_per_pod_hour,
        ownership=group.ownership,
        simulated=False,
    )


def headroom_nodes(
    groups: Sequence[BoundGroup], config: GearshiftConfig, nodes: Sequence[NodeView]
) -> list[NodeView]:
    """The pods each group could still add (up to its max), as alive nodes of the group's
    node group in ``config`` (see ``planning_config``)."""
    live = _live_pods(nodes)
    node_groups = {group.name: group for group in config.fleet.node_groups}
    views: list[NodeView] = []
    for group in groups:
        node_group = node_groups[group.settings.name]
        spec = group_accelerator(node_group)
        deleting = set(group.view.workers_to_delete)
        serving = [pod for pod in live[group.settings.name] if pod not in deleting]
        for index in range(max(0, group.max_replicas - len(serving))):
            views.append(
                NodeView(
                    node_id=f"{group.settings.name}/new-{index}",
                    group=group.settings.name,
                    accelerator=spec.name,
                    accelerator_count=node_group.accelerators_per_node,
                    accelerator_memory_gib=spec.memory_gib,
                    price_per_hour=node_group.node_price_per_hour(),
                    ownership=node_group.ownership,
                )
            )
    return views


def group_scales(
    groups: Sequence[BoundGroup],
    nodes: Sequence[NodeView],
    busy: Collection[str],
    plan: PlacementPlan,
    headroom: Sequence[NodeView],
) -> list[GroupScale]:
    """Each group now and what ``plan`` (made over ``nodes`` + ``headroom``) uses of it.

    ``busy``: node ids that run a replica or that the controller's plan starts one on.
    """
    group_of = {view.node_id: view.group for view in (*nodes, *headroom)}
    pods: dict[str, set[str]] = defaultdict(set)
    accelerators: dict[str, int] = defaultdict(int)
    for assignment in plan.assignments:
        group = group_of.get(assignment.node_id)
        if group is not None:
            pods[group].add(assignment.node_id)
            accelerators[group] += assignment.tensor_parallel
    live = _live_pods(nodes)
    return [
        GroupScale(
            name=group.settings.name,
            accelerator=group.settings.accelerator,
            replicas=group.view.replicas or 0,
            min_replicas=group.min_replicas,
            max_replicas=group.max_replicas,
            needed_pods=len(pods[group.settings.name]),
            needed_accelerators=accelerators[group.settings.name],
            live_pods=tuple(sorted(live[group.settings.name])),
            busy_pods=frozenset(busy) & frozenset(live[group.settings.name]),
            deleting_pods=frozenset(group.view.workers_to_delete),
            demand_unplaced=bool(plan.unplaced),
        )
        for group in groups
    ]


def _live_pods(nodes: Sequence[NodeView]) -> Mapping[str, list[str]]:
    live: dict[str, list[str]] = defaultdict(list)
    for view in nodes:
        if view.alive:
            live[view.group].append(view.node_id)
    return live
