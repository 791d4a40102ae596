"""Worker-group scaling decisions (pure) and the JSON patch that applies them.

Pins: growth is immediate and clamped at the max (with the reason); nothing changes when the
plan needs what runs; the min holds a floor; shrinking waits for the cooldown, goes to the most
wanted over the window, removes only idle pods by name, never while pods are joining, and not
pods KubeRay is already deleting; the patch tests the group's name and replicas first.
"""

from __future__ import annotations

from typing import Any

import pytest

from scheduler.kubernetes.api import (
    KubernetesConflict,
    KubernetesError,
    PatchOp,
    WorkerGroupView,
)
from scheduler.kubernetes.fake import apply_json_patch
from scheduler.kubernetes.ray_cluster import ray_cluster_view, resize_patch
from scheduler.kubernetes.scaling import GroupMemory, GroupScale, ScaleDecision, decide

COOLDOWN = 300.0
NOW = 10_000.0


def group(
    replicas: int,
    needed: int,
    *,
    live: int | None = None,
    busy: int = 0,
    min_replicas: int = 0,
    max_replicas: int = 4,
    deleting: int = 0,
) -> GroupScale:
    """A group of L4 pods `pod-0..`; the first `busy` pods are busy, the last `deleting` are
    being deleted."""
    pods = tuple(f"pod-{i}" for i in range(replicas if live is None else live))
    return GroupScale(
        name="l4",
        accelerator="L4",
        replicas=replicas,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        needed_pods=needed,
        needed_accelerators=needed,
        live_pods=pods,
        busy_pods=frozenset(pods[:busy]),
        deleting_pods=frozenset(pods[len(pods) - deleting :]),
    )


WINDOW = GroupMemory(fewer_since=NOW - COOLDOWN)
"""A group that has wanted fewer pods for exactly the cooldown."""


@pytest.mark.parametrize(
    ("scale", "memory", "target", "deleted", "reason"),
    [
        pytest.param(group(0, 2), GroupMemory(), 2, (), "l4: 0 -> 2 pods: the plan needs 2 pods "
                     "(2 x L4)", id="grows-at-once"),
        pytest.param(group(1, 6, busy=1), GroupMemory(), 4, (), "clamped at max_replicas 4",
                     id="growth-clamped-at-max"),
        pytest.param(group(4, 6, busy=4), GroupMemory(), 4, (), "l4: stays at 4 pods: the plan "
                     "needs 6 pods (6 x L4); clamped at max_replicas 4", id="at-max-no-change"),
        pytest.param(group(2, 2, busy=2), GroupMemory(), 2, (), "l4: stays at 2 pods",
                     id="steady"),
        pytest.param(group(0, 0, min_replicas=1), GroupMemory(), 1, (), "kept at min_replicas 1",
                     id="grows-to-min"),
        pytest.param(group(3, 1, busy=1), GroupMemory(), 3, (), "shrinking after 300 s of "
                     "wanting fewer (0 s so far)", id="shrink-waits-for-cooldown"),
        pytest.param(group(3, 1, busy=1), GroupMemory(NOW - 299), 3, (), "(299 s so far)",
                     id="shrink-still-waits"),
        pytest.param(group(3, 1, busy=1), WINDOW, 1, ("pod-2", "pod-1"), "l4: 3 -> 1 pod: "
                     "the plan needs 1 pod (1 x L4) (for 300 s); removing idle pods pod-2, pod-1",
                     id="shrinks-idle-pods-after-cooldown"),
        pytest.param(group(3, 1, busy=1), GroupMemory(NOW - COOLDOWN, most_wanted=2), 2,
                     ("pod-2",), "3 -> 2 pods", id="shrinks-to-most-wanted-in-window"),
        pytest.param(group(3, 0, busy=3), WINDOW, 3, (), "l4: stays at 3 pods: 3 pods run or "
                     "are about to run replicas", id="busy-pods-count-as-needed"),
        pytest.param(group(3, 0, busy=1, min_replicas=2), WINDOW, 2, ("pod-2",),
                     "kept at min_replicas 2", id="shrink-stops-at-min"),
        pytest.param(group(3, 1, live=1, busy=1), WINDOW, 3, (), "2 of its pods have not "
                     "joined Ray yet", id="no-shrink-while-pods-join"),
        pytest.param(group(6, 5, busy=2, max_replicas=3), WINDOW, 3, ("pod-5", "pod-4", "pod-3"),
                     "clamped at max_replicas 3", id="above-max-shrinks-idle"),
        pytest.param(group(3, 1, live=4, busy=1, deleting=1), WINDOW, 1, ("pod-2", "pod-1"),
                     "3 -> 1 pod", id="pods-being-deleted-are-not-named-again"),
    ],
)  # fmt: skip
def test_decide(
    scale: GroupScale, memory: GroupMemory, target: int, deleted: tuple[str, ...], reason: str
) -> None:
    decision, _ = decide(scale, memory, NOW, COOLDOWN)
    assert (decision.target, decision.workers_to_delete) == (target, deleted)
    assert decision.changed == (target != scale.replicas)
    assert reason in decision.reason


def test_shrinking_removes_only_idle_pods_and_says_how_many_stay_busy() -> None:
    scale = group(4, 0, busy=3)  # wants none, but three pods run replicas
    decision, _ = decide(scale, WINDOW, NOW, COOLDOWN)
    assert decision.workers_to_delete == ("pod-3",) and decision.target == 3


def test_memory_remembers_the_window_and_its_highest_want() -> None:
    _, memory = decide(group(4, 1, busy=1), GroupMemory(), NOW, COOLDOWN)
    assert memory == GroupMemory(fewer_since=NOW, most_wanted=1)
    _, memory = decide(group(4, 3, busy=3), memory, NOW + 10, COOLDOWN)
    assert memory == GroupMemory(fewer_since=NOW, most_wanted=3)
    decision, memory = decide(group(4, 1, busy=1), memory, NOW + COOLDOWN, COOLDOWN)
    assert (decision.target, decision.workers_to_delete) == (3, ("pod-3",))
    assert memory == GroupMemory()  # a shrink starts a new window


def test_wanting_as_many_as_run_resets_the_window() -> None:
    _, memory = decide(group(3, 1, busy=1), GroupMemory(), NOW, COOLDOWN)
    _, memory = decide(group(3, 3, busy=3), memory, NOW + 100, COOLDOWN)
    assert memory == GroupMemory()
    decision, _ = decide(group(3, 1, busy=1), memory, NOW + COOLDOWN, COOLDOWN)
    assert not decision.changed  # the window restarted 200 s ago: no flapping


def test_zero_cooldown_shrinks_at_once() -> None:
    decision, _ = decide(group(2, 0), GroupMemory(), NOW, 0.0)
    assert (decision.target, decision.workers_to_delete) == (0, ("pod-1", "pod-0"))


def test_decision_without_change() -> None:
    assert not ScaleDecision("l4", 2, 2, "").changed


# ----------------------------------------------------------------------------- the patch

CLUSTER: dict[str, Any] = {
    "apiVersion": "ray.io/v1",
    "kind": "RayCluster",
    "metadata": {"name": "llm", "namespace": "gearshift", "resourceVersion": "7"},
    "spec": {
        "workerGroupSpecs": [
            {"groupName": "cpu", "replicas": 1, "minReplicas": 1, "maxReplicas": 2},
            {"groupName": "l4", "replicas": 1, "minReplicas": 0, "maxReplicas": 8,
             "scaleStrategy": {"workersToDelete": ["old-pod"]}},
            {"groupName": "h100", "minReplicas": 0, "maxReplicas": 2},
        ]
    },
}  # fmt: skip


def test_ray_cluster_view_reads_worker_groups() -> None:
    view = ray_cluster_view(CLUSTER)
    assert (view.namespace, view.name, view.resource_version) == ("gearshift", "llm", "7")
    l4 = view.worker_group("l4")
    assert l4 == WorkerGroupView(1, "l4", 1, 0, 8, ("old-pod",), has_scale_strategy=True)
    h100 = view.worker_group("h100")
    assert h100 is not None and h100.replicas is None and not h100.has_scale_strategy
    assert view.worker_group("a100") is None


@pytest.mark.parametrize(
    "document",
    [{}, {"metadata": {}}, {"metadata": {"name": "x"}, "spec": {"workerGroupSpecs": [{}]}},
     {"metadata": {"name": "x"}, "spec": {"workerGroupSpecs": [{"groupName": "a",
                                                                 "replicas": "2"}]}}],
)  # fmt: skip
def test_ray_cluster_view_rejects_documents_that_are_not_ray_clusters(
    document: dict[str, Any],
) -> None:
    with pytest.raises(KubernetesError, match="not a RayCluster"):
        ray_cluster_view(document)


def test_resize_patch_tests_name_and_replicas_then_sets_them() -> None:
    l4 = ray_cluster_view(CLUSTER).worker_group("l4")
    assert l4 is not None
    assert resize_patch(l4, 3) == (
        PatchOp("test", "/spec/workerGroupSpecs/1/groupName", "l4"),
        PatchOp("test", "/spec/workerGroupSpecs/1/replicas", 1),
        PatchOp("add", "/spec/workerGroupSpecs/1/replicas", 3),
    )
    patched = apply_json_patch(CLUSTER, resize_patch(l4, 0, ("pod-a",)))
    spec = patched["spec"]["workerGroupSpecs"][1]
    assert spec["replicas"] == 0 and spec["scaleStrategy"] == {"workersToDelete": ["pod-a"]}
    assert patched["spec"]["workerGroupSpecs"][0] == CLUSTER["spec"]["workerGroupSpecs"][0]
    assert CLUSTER["spec"]["workerGroupSpecs"][1]["replicas"] == 1  # the input is untouched


def test_resize_patch_adds_missing_replicas_and_scale_strategy() -> None:
    h100 = ray_cluster_view(CLUSTER).worker_group("h100")
    assert h100 is not None
    ops = resize_patch(h100, 2)
    assert [op.op for op in ops] == ["test", "add"]  # no replicas to test
    shrink = apply_json_patch(CLUSTER, resize_patch(h100, 0, ("pod-b",)))
    assert shrink["spec"]["workerGroupSpecs"][2]["scaleStrategy"] == {"workersToDelete": ["pod-b"]}
    assert [op.to_json() for op in ops][1] == {
        "op": "add",
        "path": "/spec/workerGroupSpecs/2/replicas",
        "value": 2,
    }


def test_a_stale_patch_conflicts_and_applies_nothing() -> None:
    l4 = ray_cluster_view(CLUSTER).worker_group("l4")
    assert l4 is not None
    moved = apply_json_patch(CLUSTER, [PatchOp("replace", "/spec/workerGroupSpecs/1/replicas", 5)])
    with pytest.raises(KubernetesConflict, match="testing value /spec/workerGroupSpecs/1/replicas"):
        apply_json_patch(moved, resize_patch(l4, 3))
    reordered = apply_json_patch(CLUSTER, [PatchOp("remove", "/spec/workerGroupSpecs/0")])
    with pytest.raises(KubernetesConflict, match="groupName"):
        apply_json_patch(reordered, resize_patch(l4, 3))


def test_json_patch_paths_must_exist() -> None:
    with pytest.raises(KubernetesError, match="missing path"):
        apply_json_patch(CLUSTER, [PatchOp("replace", "/spec/nope/0", 1)])
    with pytest.raises(KubernetesError, match="not a JSON pointer"):
        apply_json_patch(CLUSTER, [PatchOp("add", "spec", 1)])
