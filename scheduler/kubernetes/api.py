"""The Kubernetes seam: the ``KubernetesApi`` Protocol, the values it trades, and its errors.

Gearshift asks three things of Kubernetes: the Nodes (labels and annotations), one KubeRay
RayCluster, and a JSON patch (RFC 6902) to that RayCluster. ``scheduler.controlplane.
kubernetes_client`` implements the Protocol with the official client; ``scheduler.kubernetes.
fake.FakeKubernetesApi`` in memory, for tests. Errors::

    ControlPlaneError
    └── KubernetesError         the API refused the request or could not be reached
        ├── KubernetesNotFound  the object does not exist (404)
        └── KubernetesConflict  it changed since it was read (409, or a failed `test` op)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from scheduler.errors import ControlPlaneError

RAY_GROUP = "ray.io"
RAY_VERSION = "v1"
RAY_CLUSTERS = "rayclusters"


class KubernetesError(ControlPlaneError):
    """The Kubernetes API refused a request or could not be reached."""


class KubernetesNotFound(KubernetesError):
    """The object asked for does not exist."""


class KubernetesConflict(KubernetesError):
    """The object changed since it was read: re-read it and decide again."""


@dataclass(frozen=True, slots=True)
class KubeNode:
    """One Node object: what Gearshift reads of it."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WorkerGroupView:
    """One entry of a RayCluster's ``spec.workerGroupSpecs``."""

    index: int
    """Position in ``workerGroupSpecs`` (JSON-patch paths address it by index)."""
    name: str
    replicas: int | None
    """``replicas``; None when the field is absent."""
    min_replicas: int | None = None
    max_replicas: int | None = None
    workers_to_delete: tuple[str, ...] = ()
    """``scaleStrategy.workersToDelete``: pods KubeRay deletes on its next reconcile."""
    has_scale_strategy: bool = False


@dataclass(frozen=True, slots=True)
class RayClusterView:
    """A RayCluster as Gearshift reads it."""

    namespace: str
    name: str
    resource_version: str
    worker_groups: tuple[WorkerGroupView, ...]

    def worker_group(self, name: str) -> WorkerGroupView | None:
        return next((group for group in self.worker_groups if group.name == name), None)


@dataclass(frozen=True, slots=True)
class PatchOp:
    """One RFC 6902 operation; ``path`` is a JSON pointer."""

    op: Literal["add", "replace", "remove", "test"]
    path: str
    value: object = None

    def to_json(self) -> dict[str, object]:
        document: dict[str, object] = {"op": self.op, "path": self.path}
        if self.op != "remove":
            document["value"] = self.value
        return document


class KubernetesApi(Protocol):
    """What Gearshift asks of the Kubernetes API. Every method raises ``KubernetesError``."""

    def list_nodes(self) -> list[KubeNode]:
        """Every Node of the cluster."""
        ...

    def get_ray_cluster(self, namespace: str, name: str) -> RayClusterView:
        """The RayCluster; ``KubernetesNotFound`` when there is none."""
        ...

    def patch_ray_cluster(
        self, namespace: str, name: str, patch: Sequence[PatchOp]
    ) -> RayClusterView:
        """Apply a JSON patch atomically and return the result. ``KubernetesConflict`` when a
        ``test`` op fails or the object changed under the request; nothing is applied then."""
        ...
