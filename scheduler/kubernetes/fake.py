"""``FakeKubernetesApi``: Nodes and RayClusters in memory, with JSON patches applied as the API
server applies them (atomically, ``test`` ops guarding), a record of every patch, and injected
conflicts and failures for tests.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from scheduler.kubernetes.api import (
    KubeNode,
    KubernetesApi,
    KubernetesConflict,
    KubernetesError,
    KubernetesNotFound,
    PatchOp,
    RayClusterView,
)
from scheduler.kubernetes.ray_cluster import ray_cluster_view


class FakeKubernetesApi(KubernetesApi):
    """Serves ``nodes`` and RayCluster documents; ``patches`` records every patch request as
    (namespace, name, ops), applied or not.

    ``conflicts`` makes the next that many patches fail with ``KubernetesConflict`` (as a 409
    from a concurrent writer would) without applying them; ``on_patch`` runs before each patch
    is applied (a test uses it to change the object under the request); ``error`` makes every
    call fail.
    """

    def __init__(
        self, nodes: Iterable[KubeNode] = (), ray_clusters: Iterable[dict[str, Any]] = ()
    ) -> None:
        self.nodes = list(nodes)
        self.ray_clusters: dict[tuple[str, str], dict[str, Any]] = {}
        for document in ray_clusters:
            self.put_ray_cluster(document)
        self.patches: list[tuple[str, str, tuple[PatchOp, ...]]] = []
        self.conflicts = 0
        self.error: KubernetesError | None = None
        self.on_patch: list[Callable[[dict[str, Any]], None]] = []
        self.calls: list[str] = []

    def put_ray_cluster(self, document: dict[str, Any]) -> None:
        """Store (or replace) a RayCluster document, as `kubectl apply` would."""
        stored = copy.deepcopy(document)
        metadata = stored.setdefault("metadata", {})
        metadata.setdefault("namespace", "default")
        metadata.setdefault("resourceVersion", "1")
        self.ray_clusters[(metadata["namespace"], metadata["name"])] = stored

    def ray_cluster(self, namespace: str, name: str) -> dict[str, Any]:
        """The stored document (for assertions)."""
        return self.ray_clusters[(namespace, name)]

    # ------------------------------------------------------------------ KubernetesApi

    def list_nodes(self) -> list[KubeNode]:
        self._call("list_nodes")
        return list(self.nodes)

    def get_ray_cluster(self, namespace: str, name: str) -> RayClusterView:
        self._call("get_ray_cluster")
        return ray_cluster_view(self._document(namespace, name))

    def patch_ray_cluster(
        self, namespace: str, name: str, patch: Sequence[PatchOp]
    ) -> RayClusterView:
        self._call("patch_ray_cluster")
        self.patches.append((namespace, name, tuple(patch)))
        document = self._document(namespace, name)
        for hook in self.on_patch:
            hook(document)
        if self.conflicts > 0:
            self.conflicts -= 1
            raise KubernetesConflict(
                f"Operation cannot be fulfilled on rayclusters.ray.io {name!r}: the object has "
                "been modified; please apply your changes to the latest version and try again"
            )
        patched = apply_json_patch(document, patch)
        metadata = patched["metadata"]
        metadata["resourceVersion"] = str(int(metadata.get("resourceVersion", "0")) + 1)
        self.ray_clusters[(namespace, name)] = patched
        return ray_cluster_view(patched)

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if self.error is not None:
            raise self.error

    def _document(self, namespace: str, name: str) -> dict[str, Any]:
        document = self.ray_clusters.get((namespace, name))
        if document is None:
            raise KubernetesNotFound(f'rayclusters.ray.io "{name}" not found in {namespace}')
        return document


def apply_json_patch(document: dict[str, Any], patch: Sequence[PatchOp]) -> dict[str, Any]:
    """``document`` with the RFC 6902 ``patch`` applied, or ``KubernetesConflict`` (a failed
    ``test``) / ``KubernetesError`` (a bad path) with ``document`` untouched."""
    result = copy.deepcopy(document)
    for op in patch:
        *parents, last = _pointer(op.path)
        target: Any = result
        for token in parents:
            target = _child(target, token, op.path)
        if op.op == "test":
            if _child(target, last, op.path) != op.value:
                raise KubernetesConflict(f"testing value {op.path} failed")
        elif op.op in ("add", "replace"):
            if isinstance(target, list):
                index = len(target) if last == "-" else int(last)
                if op.op == "add":
                    target.insert(index, copy.deepcopy(op.value))
                else:
                    _child(target, last, op.path)
                    target[index] = copy.deepcopy(op.value)
            elif isinstance(target, dict):
                if op.op == "replace":
                    _child(target, last, op.path)
                target[last] = copy.deepcopy(op.value)
            else:
                raise KubernetesError(f"jsonpatch {op.op}: {op.path} is not in a container")
        else:
            _child(target, last, op.path)
            del target[int(last) if isinstance(target, list) else last]
    return result


def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise KubernetesError(f"jsonpatch: {path!r} is not a JSON pointer")
    return [token.replace("~1", "/").replace("~0", "~") for token in path[1:].split("/")]


def _child(container: Any, token: str, path: str) -> Any:
    try:
        if isinstance(container, list):
            return container[int(token)]
        return container[token]
    except (KeyError, IndexError, ValueError, TypeError):
        raise KubernetesError(f"jsonpatch: doc is missing path {path!r}") from None
