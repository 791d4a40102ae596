"""A RayCluster document read into a ``RayClusterView``, and the JSON patch that resizes one of
its worker groups. Pure; shared by the real client and the fake.

The patch addresses the group by index, so it first tests that the index still holds that group
and that ``replicas`` still holds the value the decision started from: if anyone reordered the
groups or resized this one since the read, the API answers with a conflict instead of applying
a stale decision (a JSON merge patch cannot do this: it would replace the whole list).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from scheduler.kubernetes.api import KubernetesError, PatchOp, RayClusterView, WorkerGroupView


def ray_cluster_view(document: Mapping[str, Any]) -> RayClusterView:
    """The view of a RayCluster JSON document; ``KubernetesError`` when it is not one."""
    try:
        metadata = document["metadata"]
        groups = (document.get("spec") or {}).get("workerGroupSpecs") or []
        return RayClusterView(
            namespace=str(metadata.get("namespace", "")),
            name=str(metadata["name"]),
            resource_version=str(metadata.get("resourceVersion", "")),
            worker_groups=tuple(_group(index, group) for index, group in enumerate(groups)),
        )
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise KubernetesError(f"not a RayCluster document: {exc!r}") from None


def _group(index: int, group: Mapping[str, Any]) -> WorkerGroupView:
    strategy = group.get("scaleStrategy")
    return WorkerGroupView(
        index=index,
        name=str(group["groupName"]),
        replicas=_count(group.get("replicas")),
        min_replicas=_count(group.get("minReplicas")),
        max_replicas=_count(group.get("maxReplicas")),
        workers_to_delete=tuple(str(pod) for pod in (strategy or {}).get("workersToDelete") or ()),
        has_scale_strategy=isinstance(strategy, Mapping),
    )


def _count(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"a replica count must be an integer, not {value!r}")
    return value


def resize_patch(
    group: WorkerGroupView, replicas: int, workers_to_delete: tuple[str, ...] = ()
) -> tuple[PatchOp, ...]:
    """Set ``group``'s replicas (and, when shrinking, the pods KubeRay must delete), guarded by
    ``test`` ops on its name and its current replicas."""
    base = f"/spec/workerGroupSpecs/{group.index}"
    ops = [PatchOp("test", f"{base}/groupName", group.name)]
    if group.replicas is not None:
        ops.append(PatchOp("test", f"{base}/replicas", group.replicas))
    ops.append(PatchOp("add", f"{base}/replicas", replicas))
    if workers_to_delete:
        if group.has_scale_strategy:
            ops.append(
                PatchOp("add", f"{base}/scaleStrategy/workersToDelete", list(workers_to_delete))
            )
        else:
            ops.append(
                PatchOp(
                    "add", f"{base}/scaleStrategy", {"workersToDelete": list(workers_to_delete)}
                )
            )
    return tuple(ops)
