"""The ``KubernetesApi`` contract, held by ``FakeKubernetesApi`` and by ``KubernetesClient``
talking to a loopback HTTP server that answers as the API server does.

Pins: Nodes are listed across pages; a RayCluster is read and JSON-patched (content type
``application/json-patch+json``, never a merge patch); a failed ``test`` op (422) and a 409 are
``KubernetesConflict``; 404 is ``KubernetesNotFound``; an unreachable server is
``KubernetesError``; ``connect`` reads a kubeconfig; the controller actor builds the sync only
when ``kubernetes.enabled``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from kubernetes import client

from scheduler.config import parse_config
from scheduler.controlplane.controller import ControllerActor
from scheduler.controlplane.kubernetes_client import JSON_PATCH, KubernetesClient
from scheduler.controlplane.kubernetes_sync import KubernetesSync
from scheduler.kubernetes.api import (
    KubeNode,
    KubernetesApi,
    KubernetesConflict,
    KubernetesError,
    KubernetesNotFound,
    PatchOp,
)
from scheduler.kubernetes.fake import FakeKubernetesApi, apply_json_patch

CLUSTER: dict[str, Any] = {
    "apiVersion": "ray.io/v1",
    "kind": "RayCluster",
    "metadata": {"name": "llm", "namespace": "gearshift", "resourceVersion": "41"},
    "spec": {"workerGroupSpecs": [{"groupName": "l4", "replicas": 1, "maxReplicas": 4}]},
}
NODES = [
    KubeNode(f"node-{i}", {"nvidia.com/gpu.product": "NVIDIA-L4"}, {"a": str(i)}) for i in range(3)
]
RAY_CLUSTER_PATH = "/apis/ray.io/v1/namespaces/gearshift/rayclusters/llm"


def status(code: int, reason: str, message: str, cause: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if cause is not None:
        body["details"] = {"causes": [{"reason": "UnexpectedServerResponse", "message": cause}]}
    return body


class ApiServer:
    """Answers like the API server for Nodes (two per page) and one RayCluster."""

    def __init__(self) -> None:
        self.document = json.loads(json.dumps(CLUSTER))
        self.requests: list[tuple[str, str, dict[str, str], Any]] = []
        self.next_status: dict[str, Any] | None = None
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return None

            def do_GET(self) -> None:
                server.handle(self, "GET")

            def do_PATCH(self) -> None:
                server.handle(self, "PATCH")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def handle(self, request: BaseHTTPRequestHandler, method: str) -> None:
        url = urlparse(request.path)
        length = int(request.headers.get("Content-Length") or 0)
        body = json.loads(request.rfile.read(length)) if length else None
        headers = {key.lower(): value for key, value in request.headers.items()}
        self.requests.append((method, request.path, headers, body))
        code, answer = self.answer(method, url.path, parse_qs(url.query), body)
        data = json.dumps(answer).encode()
        request.send_response(code)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)

    def answer(
        self, method: str, path: str, query: dict[str, list[str]], body: Any
    ) -> tuple[int, Any]:
        if path == "/api/v1/nodes" and method == "GET":
            start = int(query.get("continue", ["0"])[0])
            page = NODES[start : start + 2]
            items = [
                {"metadata": {"name": n.name, "labels": n.labels, "annotations": n.annotations}}
                for n in page
            ]
            more = {"continue": str(start + 2)} if start + 2 < len(NODES) else {}
            return 200, {"kind": "NodeList", "metadata": more, "items": items}
        if path != RAY_CLUSTER_PATH:
            return 404, status(404, "NotFound", f"{path} not found")
        if self.next_status is not None:
            answer, self.next_status = self.next_status, None
            return int(answer["code"]), answer
        if method == "GET":
            return 200, self.document
        ops = [PatchOp(op["op"], op["path"], op.get("value")) for op in body]
        try:
            self.document = apply_json_patch(self.document, ops)
        except KubernetesConflict as exc:
            message = "the server rejected our request due to an error in our request"
            cause = f"{exc}: test failed"
            return 422, status(422, "Invalid", message, cause)
        return 200, self.document

    def __enter__(self) -> ApiServer:
        self.thread.start()
        return self

    def __exit__(self, *args: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[ApiServer]:
    with ApiServer() as running:
        yield running


def real_client(url: str) -> KubernetesClient:
    configuration = client.Configuration(host=url)
    configuration.retries = 0
    return KubernetesClient(client.ApiClient(configuration), timeout_s=5)


@pytest.fixture(params=["fake", "client"])
def api(request: pytest.FixtureRequest, server: ApiServer) -> KubernetesApi:
    if request.param == "fake":
        return FakeKubernetesApi(NODES, [json.loads(json.dumps(CLUSTER))])
    return real_client(server.url)


# ------------------------------------------------------------------------------ contract


def test_lists_every_node(api: KubernetesApi) -> None:
    assert api.list_nodes() == NODES


def test_reads_and_patches_a_ray_cluster(api: KubernetesApi) -> None:
    cluster = api.get_ray_cluster("gearshift", "llm")
    (l4,) = cluster.worker_groups
    assert (cluster.name, l4.name, l4.replicas, l4.max_replicas) == ("llm", "l4", 1, 4)
    patched = api.patch_ray_cluster(
        "gearshift",
        "llm",
        [
            PatchOp("test", "/spec/workerGroupSpecs/0/replicas", 1),
            PatchOp("add", "/spec/workerGroupSpecs/0/replicas", 3),
        ],
    )
    assert patched.worker_groups[0].replicas == 3
    assert api.get_ray_cluster("gearshift", "llm").worker_groups[0].replicas == 3


def test_a_failed_test_op_is_a_conflict_and_changes_nothing(api: KubernetesApi) -> None:
    stale = [
        PatchOp("test", "/spec/workerGroupSpecs/0/replicas", 2),
        PatchOp("add", "/spec/workerGroupSpecs/0/replicas", 5),
    ]
    with pytest.raises(KubernetesConflict):
        api.patch_ray_cluster("gearshift", "llm", stale)
    assert api.get_ray_cluster("gearshift", "llm").worker_groups[0].replicas == 1


def test_a_missing_ray_cluster_is_not_found(api: KubernetesApi) -> None:
    with pytest.raises(KubernetesNotFound):
        api.get_ray_cluster("gearshift", "other")


# --------------------------------------------------------------------- the real client only


def test_patches_are_json_patches_not_merge_patches(server: ApiServer) -> None:
    real_client(server.url).patch_ray_cluster(
        "gearshift", "llm", [PatchOp("add", "/spec/workerGroupSpecs/0/replicas", 2)]
    )
    method, path, headers, body = server.requests[-1]
    assert (method, path) == ("PATCH", RAY_CLUSTER_PATH)
    assert headers["content-type"] == JSON_PATCH
    assert body == [{"op": "add", "path": "/spec/workerGroupSpecs/0/replicas", "value": 2}]


def test_nodes_are_listed_in_pages(server: ApiServer) -> None:
    real_client(server.url).list_nodes()
    paths = [path for method, path, _, _ in server.requests if method == "GET"]
    assert paths == ["/api/v1/nodes?limit=500", "/api/v1/nodes?continue=2&limit=500"]


@pytest.mark.parametrize(
    ("answer", "error", "says"),
    [
        (status(409, "Conflict", 'Operation cannot be fulfilled on rayclusters.ray.io "llm": '
                "the object has been modified"), KubernetesConflict, "409 Conflict"),
        (status(403, "Forbidden", 'rayclusters.ray.io "llm" is forbidden: User cannot patch'),
         KubernetesError, "403 Forbidden: rayclusters.ray.io \"llm\" is forbidden"),
        (status(422, "Invalid", "the server rejected our request due to an error in our request",
                "jsonpatch add operation does not apply: doc is missing path"), KubernetesError,
         "422 Unprocessable Entity"),
    ],
)  # fmt: skip
def test_api_errors_map_onto_the_seams(
    server: ApiServer, answer: dict[str, Any], error: type[KubernetesError], says: str
) -> None:
    server.next_status = answer
    with pytest.raises(KubernetesError) as caught:
        real_client(server.url).patch_ray_cluster("gearshift", "llm", [])
    assert type(caught.value) is error
    assert says in str(caught.value)


def test_an_unreachable_server_is_a_kubernetes_error(server: ApiServer) -> None:
    url = server.url
    server.__exit__()
    with pytest.raises(KubernetesError, match="cannot list Nodes: the API server is unreachable"):
        real_client(url).list_nodes()


def kubeconfig(path: Path, url: str) -> Path:
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": url}}],
                "users": [{"name": "u", "user": {"token": "secret-token"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    return path


def test_connect_reads_a_kubeconfig(server: ApiServer, tmp_path: Path) -> None:
    api = KubernetesClient.connect(str(kubeconfig(tmp_path / "config", server.url)))
    assert [node.name for node in api.list_nodes()] == ["node-0", "node-1", "node-2"]
    assert server.requests[0][2]["authorization"] == "Bearer secret-token"


def test_connect_without_a_cluster_is_a_kubernetes_error(tmp_path: Path) -> None:
    with pytest.raises(KubernetesError, match="cannot configure the Kubernetes client"):
        KubernetesClient.connect(str(tmp_path / "absent"))


def test_controller_actor_builds_the_sync_only_when_enabled(
    server: ApiServer, tmp_path: Path
) -> None:
    path = kubeconfig(tmp_path / "config", server.url)
    text = f"kubernetes: {{enabled: true, kubeconfig: {path}, ray_cluster: llm}}\n"
    enabled = ControllerActor(parse_config(text).model_dump_json())._controller
    assert isinstance(enabled.kubernetes, KubernetesSync)
    assert isinstance(enabled.kubernetes.api, KubernetesClient)
    disabled = ControllerActor(parse_config("{}").model_dump_json())._controller
    assert disabled.kubernetes is None
