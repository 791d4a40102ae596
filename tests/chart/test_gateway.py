"""The pods that serve the gateway: the Service reaches them, readiness is /ready, a stopping
pod keeps serving through preStop and has the grace to drain; the standalone Deployment has
its autoscaler and disruption budget; `helm test` calls /v1/models."""

from __future__ import annotations

import pytest

from tests.chart.rendering import (
    RELEASE,
    SCENARIOS,
    Obj,
    PodSpec,
    Renderer,
    kind,
    one,
    pod_specs,
    selects,
    values_of,
)

pytestmark = pytest.mark.chart


def _gateway_pods(objects: list[Obj]) -> list[PodSpec]:
    service = one(objects, "Service", "-gateway")
    return [pod for pod in pod_specs(objects) if selects(service["spec"]["selector"], pod.labels)]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_the_gateway_service_reaches_pods_that_serve_http(
    renderer: Renderer, scenario: str
) -> None:
    objects = renderer.objects(scenario)
    pods = _gateway_pods(objects)
    standalone = values_of(scenario)["gateway"]["standalone"]["enabled"]
    assert [pod.labels["app.kubernetes.io/component"] for pod in pods] == [
        "gateway" if standalone else "head"
    ]
    container = pods[0].spec["containers"][0]
    assert "http" in {port["name"] for port in container["ports"]}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_a_stopping_gateway_is_unready_then_drains_within_its_grace(
    renderer: Renderer, scenario: str
) -> None:
    gateway = values_of(scenario)["gateway"]
    for pod in _gateway_pods(renderer.objects(scenario)):
        container = pod.spec["containers"][0]
        assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
        assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
        sleep = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        assert sleep == gateway["preStopSleepSeconds"] > 0
        assert pod.spec["terminationGracePeriodSeconds"] >= sleep + gateway["drainSeconds"]


def test_a_grace_period_shorter_than_the_drain_is_refused(renderer: Renderer) -> None:
    result = renderer.tools.run(
        renderer.tools.helm,
        *renderer.template_args("default"),
        "--set", "gateway.terminationGracePeriodSeconds=20",
        "--set", "gateway.drainSeconds=30",
    )  # fmt: skip
    assert result.returncode != 0
    assert "must be at least preStopSleepSeconds + drainSeconds" in result.stderr


def test_the_standalone_gateway_scales_and_keeps_a_disruption_budget(renderer: Renderer) -> None:
    objects = renderer.objects("standalone-gateway")
    deployment = one(objects, "Deployment", "-gateway")
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    hpa = one(objects, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 12)
    pdb = one(objects, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 2
    assert selects(pdb["spec"]["selector"]["matchLabels"], labels)
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 90
    for scenario in ("default", "three-gpu-cpu"):
        assert not kind(renderer.objects(scenario), "Deployment")
        assert not kind(renderer.objects(scenario), "PodDisruptionBudget")


def test_the_standalone_gateway_needs_a_command(renderer: Renderer) -> None:
    result = renderer.tools.run(
        renderer.tools.helm, *renderer.template_args("default"),
        "--set", "gateway.standalone.enabled=true",
    )  # fmt: skip
    assert result.returncode != 0
    assert "gateway.standalone.command is required" in result.stderr


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_helm_test_calls_v1_models_through_the_gateway_service(
    renderer: Renderer, scenario: str
) -> None:
    objects = renderer.objects(scenario)
    pod = one(objects, "Pod", "-test-models")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    container = pod["spec"]["containers"][0]
    assert container["command"][-1].endswith("/helm-test.py")
    env = {item["name"]: item for item in container["env"]}
    port = values_of(scenario)["gateway"]["service"]["port"]
    assert env["GATEWAY_URL"]["value"] == f"http://{RELEASE}-gearshift-gateway.llm.svc:{port}"
    key = env["TEST_API_KEY"]["valueFrom"]["secretKeyRef"]
    assert key["optional"] is True
    assert "/v1/models" in one(objects, "ConfigMap", "-scripts")["data"]["helm-test.py"]
