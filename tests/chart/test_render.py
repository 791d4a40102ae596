"""The chart lints and renders with Helm 4 and Helm 3, and every rendered object is valid for
Kubernetes 1.35: built-in kinds by kubernetes-validate (strict: unknown fields are errors),
the RayCluster and ServiceMonitor by the vendored CRD schemas, and the RayCluster's pod
templates by Kubernetes' own PodTemplate schema."""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.chart.rendering import (
    CHART,
    DEFAULT,
    NAMESPACE,
    RELEASE,
    SCENARIOS,
    Obj,
    Renderer,
    kind,
    one,
    values_file,
)

pytestmark = pytest.mark.chart

KUBERNETES = "1.35"
SCHEMAS = Path(__file__).parent / "schemas"
CRD_SCHEMAS = {
    ("ray.io/v1", "RayCluster"): "raycluster-ray.io-v1.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-monitoring.coreos.com-v1.json",
}


def _strict(node: Any) -> Any:
    """A CRD's OpenAPI schema as JSON Schema that also refuses unknown fields (what
    `kubectl apply`'s strict field validation does; the API server would drop them silently)."""
    if isinstance(node, dict):
        out = {key: _strict(value) for key, value in node.items()}
        closed = (
            out.get("type") == "object"
            and "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        )
        if closed:
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [_strict(item) for item in node]
    return node


@cache
def _crd_validator(file: str) -> jsonschema.Draft7Validator:
    schema = json.loads((SCHEMAS / file).read_text())
    return jsonschema.Draft7Validator(_strict(schema))


def problems(obj: Obj) -> list[str]:
    """Why ``obj`` would not be accepted by a Kubernetes 1.35 API server (empty: it would)."""
    name = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
    crd = CRD_SCHEMAS.get((str(obj.get("apiVersion")), str(obj.get("kind"))))
    if crd is not None:
        found = [
            f"{name}: {'.'.join(map(str, error.path))}: {error.message}"
            for error in _crd_validator(crd).iter_errors(obj)
        ]
        if obj["kind"] == "RayCluster":
            for where, template in _ray_pod_templates(obj):
                pod_template = {
                    "apiVersion": "v1",
                    "kind": "PodTemplate",
                    "metadata": {"name": where},
                    "template": template,
                }
                found += [f"{name} {where}: {p}" for p in problems(pod_template)]
        return found
    try:
        kubernetes_validate.validate(obj, KUBERNETES, strict=True)
    except kubernetes_validate.ValidationError as error:
        return [f"{name}: {'.'.join(map(str, error.path))}: {error.message}"]
    except kubernetes_validate.SchemaNotFoundError:
        return [f"{name}: no schema for {obj.get('apiVersion')} {obj.get('kind')}"]
    return []


def _ray_pod_templates(cluster: Obj) -> list[tuple[str, Obj]]:
    spec = cluster["spec"]
    templates = [("head", spec["headGroupSpec"]["template"])]
    templates += [(g["groupName"], g["template"]) for g in spec.get("workerGroupSpecs") or []]
    return templates


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("binary", ["helm", "helm3"])
def test_helm_lint_strict(renderer: Renderer, scenario: str, binary: str) -> None:
    path = values_file(scenario)
    args = ["lint", "--strict", str(CHART), "--namespace", NAMESPACE]
    if path is not None:
        args += ["--values", str(path)]
    result = renderer.tools.run(getattr(renderer.tools, binary), *args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_rendered_object_is_valid_for_kubernetes_1_35(
    renderer: Renderer, scenario: str
) -> None:
    objects = renderer.objects(scenario)
    assert objects
    found = [problem for obj in objects for problem in problems(obj)]
    assert not found, "\n".join(found)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_helm_3_renders_what_helm_4_renders(renderer: Renderer, scenario: str) -> None:
    def comparable(objects: list[Obj]) -> list[Obj]:
        masked = copy.deepcopy(objects)
        for secret in kind(masked, "Secret"):  # random admin token: differs every render
            secret["data"] = sorted(secret.get("data", {}))
        return masked

    assert comparable(renderer.objects(scenario, helm3=True)) == comparable(
        renderer.objects(scenario)
    )


def test_validation_catches_mistakes() -> None:
    """The checks above would notice an unknown field, a wrong type and a bad pod template."""
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "x"},
        "spec": {"ports": [{"port": "eighty"}], "typo": 1},
    }
    assert problems(service)
    cluster = {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": "x"},
        "spec": {
            "headGroupSpec": {"template": {"spec": {"containers": [{"name": "h", "imag": "i"}]}}},
            "workerGroupSpecs": [
                {"groupName": "g", "minReplicas": 0, "maxReplicas": 1, "replcas": 1,
                 "template": {"spec": {"containers": [{"name": "w", "image": "i"}]}}}
            ],
        },
    }  # fmt: skip
    found = "\n".join(problems(cluster))
    assert "replcas" in found
    assert "imag" in found
    assert problems({"apiVersion": "example.com/v1", "kind": "Unknown", "metadata": {"name": "u"}})


def test_every_ci_values_file_is_a_scenario() -> None:
    files = sorted(path.name for path in CHART.glob("ci/*.yaml"))
    assert all(name.endswith("-values.yaml") for name in files), files
    assert {
        "single-gpu", "three-gpu-cpu", "existing-secret", "monitoring", "gateway-autoscaled",
        "gateway-in-head",
    } <= set(SCENARIOS)  # fmt: skip


def test_notes_tell_the_operator_how_to_reach_and_test_the_gateway(renderer: Renderer) -> None:
    result = renderer.tools.run(
        renderer.tools.helm, "install", RELEASE, str(CHART), "--namespace", NAMESPACE,
        "--dry-run=client",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    notes = result.stdout.split("NOTES:", 1)[1]
    assert f"helm test {RELEASE} -n {NAMESPACE}" in notes
    assert f"port-forward svc/{RELEASE}-gearshift-gateway 8000:8000" in notes
    assert 'base_url="http://127.0.0.1:8000/v1"' in notes
    assert f"port-forward svc/{RELEASE}-gearshift-admin" in notes


def test_the_monitoring_scenario_renders_a_service_monitor_and_a_dashboard(
    renderer: Renderer,
) -> None:
    objects = renderer.objects("monitoring")
    monitor = one(objects, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    dashboard = one(objects, "ConfigMap", "-dashboard-gearshift")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    document = json.loads(dashboard["data"]["gearshift.json"])
    assert document["uid"] == "gearshift-overview"
    assert not kind(renderer.objects(DEFAULT), "ServiceMonitor")


def test_long_release_names_still_give_valid_object_names(renderer: Renderer) -> None:
    release = "a-release-name-of-the-longest-length-helm-allows-x"  # Helm caps names at 53
    result = renderer.tools.run(
        renderer.tools.helm, "template", release, str(CHART), "--namespace", NAMESPACE
    )
    assert result.returncode == 0, result.stderr
    objects = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    for obj in objects:
        name = obj["metadata"]["name"]
        limit = 63 if obj["kind"] in {"Service", "Pod", "PersistentVolumeClaim"} else 253
        assert len(name) <= limit, f"{obj['kind']} {name}"
    # KubeRay names the head Service and pods after the RayCluster; the gateway pods reach
    # the head by that Service's name.
    cluster = one(objects, "RayCluster")["metadata"]["name"]
    assert len(cluster) <= 40
    gateway = one(objects, "Deployment", "-gateway")["spec"]["template"]["spec"]["containers"][0]
    address = gateway["args"][gateway["args"].index("--address") + 1]
    assert address.startswith(f"{cluster}-head-svc.")
    assert len(address.split(".")[0]) <= 63
