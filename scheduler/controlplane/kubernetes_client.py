"""``KubernetesClient``: the ``KubernetesApi`` seam over the official ``kubernetes`` client.

Nodes come from ``CoreV1Api.list_node`` (in pages), the RayCluster from ``CustomObjectsApi``
(group ``ray.io``, version ``v1``, plural ``rayclusters``). Patches go out as
``application/json-patch+json``: the client's default for custom objects is a merge patch,
which would replace ``workerGroupSpecs`` whole. API errors map onto the seam's: 404 is
``KubernetesNotFound``; 409, and a 422 for a failed ``test`` op, are ``KubernetesConflict``;
anything else, including an unreachable server, is ``KubernetesError``. RBAC it needs: nodes
get/list/watch (cluster-wide); rayclusters get/patch in its namespace.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import urllib3.exceptions
from kubernetes import client, config

from scheduler.kubernetes.api import (
    RAY_CLUSTERS,
    RAY_GROUP,
    RAY_VERSION,
    KubeNode,
    KubernetesApi,
    KubernetesConflict,
    KubernetesError,
    KubernetesNotFound,
    PatchOp,
    RayClusterView,
)
from scheduler.kubernetes.ray_cluster import ray_cluster_view

JSON_PATCH = "application/json-patch+json"
_TIMEOUT_S = 10.0
_PAGE = 500
_FAILED_TEST = re.compile(r"[Tt]esting value")


class KubernetesClient(KubernetesApi):
    """The Kubernetes API through an ``ApiClient`` (``connect`` builds one from config)."""

    def __init__(self, api_client: Any, timeout_s: float = _TIMEOUT_S) -> None:
        self._core = client.CoreV1Api(api_client)
        self._custom = client.CustomObjectsApi(api_client)
        self._timeout_s = timeout_s

    @classmethod
    def connect(cls, kubeconfig: str | None = None) -> KubernetesClient:
        """From a kubeconfig file when given, else the pod's service account."""
        configuration = client.Configuration()
        try:
            if kubeconfig is None:
                config.load_incluster_config(client_configuration=configuration)
            else:
                config.load_kube_config(
                    config_file=str(Path(kubeconfig).expanduser()),
                    client_configuration=configuration,
                    persist_config=False,
                )
        except (config.ConfigException, OSError) as exc:
            where = kubeconfig or "the in-cluster service account"
            message = f"cannot configure the Kubernetes client from {where}: {exc}"
            raise KubernetesError(message) from None
        return cls(client.ApiClient(configuration))

    def list_nodes(self) -> list[KubeNode]:
        return list(self._nodes())

    def _nodes(self) -> Iterator[KubeNode]:
        token: str | None = None
        while True:
            # Raw JSON, not the client's models: their field names change between releases.
            response = self._call(
                "list Nodes",
                self._core.list_node,
                limit=_PAGE,
                _continue=token,
                _preload_content=False,
                _request_timeout=self._timeout_s,
            )
            try:
                page = json.loads(response.data)
            except ValueError as exc:
                raise KubernetesError(f"cannot list Nodes: the answer is not JSON: {exc}") from None
            finally:
                response.release_conn()
            for node in page.get("items") or ():
                metadata = node.get("metadata") or {}
                yield KubeNode(
                    name=str(metadata.get("name", "")),
                    labels=dict(metadata.get("labels") or {}),
                    annotations=dict(metadata.get("annotations") or {}),
                )
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return

    def get_ray_cluster(self, namespace: str, name: str) -> RayClusterView:
        document = self._call(
            f"read RayCluster {namespace}/{name}",
            self._custom.get_namespaced_custom_object,
            RAY_GROUP,
            RAY_VERSION,
            namespace,
            RAY_CLUSTERS,
            name,
            _request_timeout=self._timeout_s,
        )
        return ray_cluster_view(document)

    def patch_ray_cluster(
        self, namespace: str, name: str, patch: Sequence[PatchOp]
    ) -> RayClusterView:
        document = self._call(
            f"patch RayCluster {namespace}/{name}",
            self._custom.patch_namespaced_custom_object,
            RAY_GROUP,
            RAY_VERSION,
            namespace,
            RAY_CLUSTERS,
            name,
            [op.to_json() for op in patch],
            _content_type=JSON_PATCH,
            _request_timeout=self._timeout_s,
        )
        return ray_cluster_view(document)

    def _call(self, what: str, method: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except client.ApiException as exc:
            raise _api_error(what, exc.status, exc.reason, exc.body or "") from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise KubernetesError(f"cannot {what}: the API server is unreachable: {exc}") from None


def _api_error(what: str, status: int | None, reason: str | None, body: str) -> KubernetesError:
    message = f"cannot {what}: {status} {reason or ''}".rstrip()
    detail = _status_message(body)
    if detail:
        message += f": {detail}"
    if status == 404:
        return KubernetesNotFound(message)
    if status == 409 or (status == 422 and _FAILED_TEST.search(body)):
        return KubernetesConflict(message)
    return KubernetesError(message)


def _status_message(body: str) -> str:
    """The ``message`` of a Kubernetes ``Status`` body (the body itself, shortened, if not)."""

    try:
        status = json.loads(body)
    except ValueError:
        return body[:200]
    message = status.get("message") if isinstance(status, dict) else None
    return str(message) if message else body[:200]
