"""``KubernetesSync`` against ``FakeKubernetesApi``, with the real planner and solver, and the
controller's wiring of it.

Pins: a worker group grows to the pods the plan needs (clamped at max, also the RayCluster's);
no patch when nothing changes or pods are still joining; an idle pod is removed only after the
cooldown and by name; a 409 is retried; a concurrent resize is never overwritten; the sync gives
up after three conflicts and says so; API failures become notes, never exceptions; it steps at
most once per interval; the controller enriches its nodes and reports the decisions.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from nodes.engines.launch import EngineSpec
from scheduler.config import GearshiftConfig, parse_config
from scheduler.controlplane.controller import Controller
from scheduler.controlplane.kubernetes_sync import CONFLICT_TRIES, KubernetesSync
from scheduler.controlplane.replica import ReplicaHealth
from scheduler.framework.placement import (
    NodeView,
    PlacementPlan,
    PlacementSolver,
    ReplicaAssignment,
)
from scheduler.inventory import groups_of_joined_nodes, node_view
from scheduler.kubernetes.api import KubeNode, KubernetesError, PatchOp
from scheduler.kubernetes.fake import FakeKubernetesApi
from scheduler.kubernetes.node_inventory import LABEL_KUBERNETES_NODE
from scheduler.placement.planner import plan as make_plan
from scheduler.plugins import PluginRegistry
from scheduler.types import LABEL_GROUP, LABEL_NODE_ID, LABEL_ROLE, ReplicaState

NS, NAME = "gearshift", "llm"


def config(replicas: int = 2, max_replicas: int = 4, cooldown: float = 300.0) -> GearshiftConfig:
    return parse_config(f"""
models:
  - {{name: qwen2.5-0.5b, max_context: 4096, replicas: {replicas}}}
kubernetes:
  enabled: true
  namespace: {NS}
  ray_cluster: {NAME}
  sync_interval_s: 30
  scale_down_cooldown_s: {cooldown}
  worker_groups:
    - {{name: l4, accelerator: L4, gpus_per_pod: 1, max_replicas: {max_replicas}}}
""")


def ray_cluster(replicas: int | None, max_replicas: int = 8) -> dict[str, Any]:
    l4: dict[str, Any] = {"groupName": "l4", "minReplicas": 0, "maxReplicas": max_replicas}
    if replicas is not None:
        l4["replicas"] = replicas
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": NAME, "namespace": NS, "resourceVersion": "100"},
        "spec": {
            "workerGroupSpecs": [
                {"groupName": "cpu", "replicas": 1, "minReplicas": 1, "maxReplicas": 1},
                l4,
            ]
        },
    }


NODES = [
    KubeNode(
        "gpu-node-1",
        {
            "nvidia.com/gpu.product": "NVIDIA-L4",
            "nvidia.com/gpu.memory": "23034",
            "nvidia.com/gpu.count": "4",
        },
        {"gearshift.dev/price-per-hour": "2.4", "gearshift.dev/capacity-type": "spot"},
    )
]


class World:
    """A RayCluster, its pods as the controller sees them, and what runs on them."""

    def __init__(self, settings: GearshiftConfig, replicas: int | None, pods: int = 0) -> None:
        self.config = settings
        self.api = FakeKubernetesApi(NODES, [ray_cluster(replicas)])
        self.sync = KubernetesSync(settings.kubernetes, self.api)
        self.solver = PluginRegistry.from_entry_points().build(
            settings.placement.solver, PlacementSolver
        )
        self.pods = [f"llm-l4-worker-{i}" for i in range(pods)]
        self.running: list[ReplicaAssignment] = []
        self.now = 1_000.0

    def nodes(self) -> list[NodeView]:
        views = []
        for pod in self.pods:
            labels = {
                LABEL_ROLE: "worker",
                LABEL_NODE_ID: pod,
                LABEL_GROUP: "l4",
                LABEL_KUBERNETES_NODE: "gpu-node-1",
            }
            resources = {"GPU": 1.0, "accelerator_type:L4": 1.0}
            view = node_view(self.sync.relabel(labels, resources), resources, alive=True)
            assert view is not None
            views.append(view)
        return views

    def step(self, advance: float = 0.0) -> None:
        """One controller round: refresh, plan over the pods, then the sync's step."""
        self.now += advance
        self.sync.refresh(self.now)
        nodes = self.nodes()
        joined = groups_of_joined_nodes(self.config, nodes)
        fleet = self.config.fleet.model_copy(update={"node_groups": joined})
        settings = self.config.model_copy(update={"fleet": fleet})
        real = make_plan(self.solver, settings, nodes, self.running)
        busy = {a.node_id for a in (*self.running, *real.assignments)}

        def plan_with(c: GearshiftConfig, n: Sequence[NodeView]) -> PlacementPlan:
            return make_plan(self.solver, c, n, self.running)

        self.sync.step(self.now, config=settings, nodes=nodes, busy=busy, plan_with=plan_with)

    def run_everywhere(self) -> None:
        """A replica runs on every pod."""
        self.running = [
            ReplicaAssignment(f"qwen-{i}", "qwen2.5-0.5b", pod, "L4", 1, 0.6)
            for i, pod in enumerate(self.pods)
        ]

    def l4(self) -> dict[str, Any]:
        groups = self.api.ray_cluster(NS, NAME)["spec"]["workerGroupSpecs"]
        l4: dict[str, Any] = groups[1]
        return l4

    def reasons(self) -> str:
        return " | ".join(self.sync.report.lines())


def test_grows_a_worker_group_to_the_pods_the_plan_needs() -> None:
    world = World(config(replicas=2), replicas=0)
    world.step()
    assert world.api.patches == [
        (
            NS,
            NAME,
            (
                PatchOp("test", "/spec/workerGroupSpecs/1/groupName", "l4"),
                PatchOp("test", "/spec/workerGroupSpecs/1/replicas", 0),
                PatchOp("add", "/spec/workerGroupSpecs/1/replicas", 2),
            ),
        )
    ]
    assert world.l4()["replicas"] == 2
    assert world.sync.report.resized == ("l4",)
    assert "l4: 0 -> 2 pods: the plan needs 2 pods (2 x L4)" in world.reasons()
    cpu = world.api.ray_cluster(NS, NAME)["spec"]["workerGroupSpecs"][0]
    assert cpu == ray_cluster(0)["spec"]["workerGroupSpecs"][0]  # other groups untouched


def test_growth_is_clamped_at_max_replicas_with_a_reason() -> None:
    world = World(config(replicas=3, max_replicas=1), replicas=None)
    world.step()
    assert world.l4()["replicas"] == 1
    assert (
        "l4: 0 -> 1 pod: the plan needs 1 pod (1 x L4); at max_replicas 1, with demand still "
        "unplaced" in world.reasons()
    )


def test_the_ray_clusters_max_replicas_bounds_too() -> None:
    world = World(config(replicas=3), replicas=0)
    world.api.put_ray_cluster(ray_cluster(0, max_replicas=2))
    world.step()
    assert world.l4()["replicas"] == 2
    assert "allows at most 2 pods (maxReplicas), under max_replicas 4" in world.reasons()


def test_no_patch_when_the_plan_needs_what_runs() -> None:
    world = World(config(replicas=2), replicas=2, pods=2)
    world.run_everywhere()
    world.step()
    assert world.api.patches == []
    assert world.sync.report.resized == ()
    assert "l4: stays at 2 pods" in world.reasons()


def test_pods_still_joining_are_not_asked_for_again() -> None:
    world = World(config(replicas=2), replicas=2, pods=0)
    world.step()
    assert world.api.patches == []


def test_idle_pod_is_removed_by_name_only_after_the_cooldown() -> None:
    world = World(config(replicas=1, cooldown=300), replicas=2, pods=2)
    world.running = [ReplicaAssignment("qwen-0", "qwen2.5-0.5b", world.pods[0], "L4", 1, 0.6)]
    world.step()
    assert world.api.patches == []
    assert "shrinking after 300 s of wanting fewer (0 s so far)" in world.reasons()
    world.step(advance=150)
    assert world.api.patches == []
    world.step(advance=150)
    assert world.l4()["replicas"] == 1
    assert world.l4()["scaleStrategy"] == {"workersToDelete": ["llm-l4-worker-1"]}
    assert "removing idle pod llm-l4-worker-1" in world.reasons()


def test_demand_returning_within_the_cooldown_keeps_the_pods() -> None:
    world = World(config(replicas=1, cooldown=300), replicas=2, pods=2)
    world.running = [ReplicaAssignment("qwen-0", "qwen2.5-0.5b", world.pods[0], "L4", 1, 0.6)]
    world.step()
    world.run_everywhere()  # demand came back: both pods busy again
    world.step(advance=200)
    world.running = world.running[:1]
    world.step(advance=200)  # wanting fewer again, but only for 0 s
    assert world.api.patches == []


def test_a_conflict_is_retried_after_re_reading() -> None:
    world = World(config(replicas=2), replicas=0)
    world.api.conflicts = 1
    world.step()
    assert len(world.api.patches) == 2
    assert world.api.calls.count("get_ray_cluster") == 2
    assert world.l4()["replicas"] == 2 and world.sync.report.resized == ("l4",)


def test_a_concurrent_resize_is_never_overwritten() -> None:
    world = World(config(replicas=2), replicas=0)

    def someone_else_resizes(document: dict[str, Any]) -> None:
        document["spec"]["workerGroupSpecs"][1]["replicas"] = 3
        world.api.on_patch.clear()

    world.api.on_patch.append(someone_else_resizes)
    world.step()
    assert len(world.api.patches) == 1  # the test op failed; re-decided: nothing to patch
    assert world.l4()["replicas"] == 3
    assert "l4: stays at 3 pods" in world.reasons()
    assert "3 of its pods have not joined Ray yet" in world.reasons()


def test_gives_up_after_three_conflicts_and_says_so() -> None:
    world = World(config(replicas=2), replicas=0)
    world.api.conflicts = 10
    world.step()
    assert len(world.api.patches) == CONFLICT_TRIES
    assert world.l4()["replicas"] == 0 and world.sync.report.resized == ()
    assert "l4: not resized: 3 tries met conflicting writes" in world.reasons()
    world.api.conflicts = 0
    world.step(advance=30)
    assert world.l4()["replicas"] == 2


def test_api_failures_are_notes_not_exceptions() -> None:
    world = World(config(replicas=2), replicas=0)
    world.api.ray_clusters.clear()
    world.step()
    assert 'cannot read the RayCluster: rayclusters.ray.io "llm" not found' in world.reasons()
    world.api.put_ray_cluster(ray_cluster(0))
    world.api.error = KubernetesError("connection refused")
    world.step(advance=30)
    assert "cannot list Nodes (keeping the last inventory): connection refused" in world.reasons()
    assert world.sync.inventory.nodes  # the last inventory stands


def test_a_worker_group_missing_from_the_ray_cluster_is_a_note() -> None:
    world = World(config(replicas=2), replicas=0)
    document = ray_cluster(0)
    document["spec"]["workerGroupSpecs"][1]["groupName"] = "l4-spot"
    world.api.put_ray_cluster(document)
    world.step()
    assert world.api.patches == []
    assert "l4: RayCluster gearshift/llm has no worker group of that name" in world.reasons()


def test_steps_at_most_once_per_sync_interval() -> None:
    world = World(config(replicas=2), replicas=0)
    world.step()
    world.api.put_ray_cluster(ray_cluster(0))  # someone scaled it back
    world.step(advance=29)
    assert world.l4()["replicas"] == 0 and world.api.calls.count("list_nodes") == 1
    world.step(advance=1)
    assert world.l4()["replicas"] == 2 and world.api.calls.count("list_nodes") == 2


def test_without_worker_groups_it_only_reads_nodes() -> None:
    settings = config().model_copy(
        update={"kubernetes": config().kubernetes.model_copy(update={"worker_groups": []})}
    )
    world = World(settings, replicas=0)
    world.step()
    assert world.api.calls == ["list_nodes"]


# ------------------------------------------------------------------------ controller wiring


class Actuator:
    def __init__(self) -> None:
        self.started: list[ReplicaAssignment] = []

    def start(self, assignment: ReplicaAssignment, spec: EngineSpec, on_gpu: bool) -> Any:
        self.started.append(assignment)
        return assignment

    async def probe(self, handle: Any, timeout_s: float) -> ReplicaHealth | None:
        return ReplicaHealth(ReplicaState.STARTING, "")

    async def drain(self, handle: Any, timeout_s: float) -> None:
        return None

    async def stop(self, handle: Any, timeout_s: float) -> None:
        return None


def test_controller_enriches_its_nodes_scales_and_reports() -> None:
    world = World(config(replicas=3), replicas=1, pods=1)
    actuator = Actuator()
    controller = Controller(
        world.config,
        world.solver,
        actuator,
        read_nodes=world.nodes,
        clock=lambda: world.now,
        kubernetes=world.sync,
    )
    asyncio.run(controller.tick())
    (pod,) = controller.nodes.values()
    assert (pod.price_per_hour, pod.ownership.value) == (0.6, "spot")  # from the Node
    assert [a.node_id for a in actuator.started] == [world.pods[0]]
    assert world.l4()["replicas"] == 3
    notes = controller.fleet_state().plan_notes
    assert "l4: 1 -> 3 pods: the plan needs 3 pods (3 x L4)" in notes
    assert controller.fleet_state().status_document()["plan_notes"] == list(notes)


def test_controller_survives_a_failing_sync(caplog: pytest.LogCaptureFixture) -> None:
    world = World(config(replicas=1), replicas=0)
    controller = Controller(
        world.config, world.solver, Actuator(), read_nodes=world.nodes, kubernetes=world.sync
    )

    def broken(c: GearshiftConfig, n: Sequence[NodeView]) -> PlacementPlan:
        raise RuntimeError("solver exploded")

    original = world.sync.step

    def step(now: float, **kwargs: Any) -> Any:
        return original(now, **{**kwargs, "plan_with": broken})

    world.sync.step = step  # type: ignore[method-assign]
    asyncio.run(controller.tick())
    assert controller.version == 1
    assert "Kubernetes sync failed" in caplog.text
