"""The pods that serve the gateway. By default a Deployment of `gearshift gateway` pods behind
the gateway Service: each joins Ray as an empty node, then runs the gateway against the head
(GCS and controller through KubeRay's head Service, the Batch API relayed to the head's
gateway), with the admin token from the Secret. Every gateway (those pods, and the head's) is
unready on /ready while it drains and has the grace to finish; the Deployment keeps a
disruption budget and autoscales on request; `helm test` calls /v1/models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scheduler.config import GearshiftConfig, parse_config
from tests.chart.rendering import (
    DEFAULT,
    NAMESPACE,
    RELEASE,
    SCENARIOS,
    STANDALONE_SCENARIOS,
    Obj,
    PodSpec,
    Renderer,
    cli_help,
    kind,
    one,
    pod_specs,
    selects,
    values_of,
)

pytestmark = pytest.mark.chart

STANDALONE = STANDALONE_SCENARIOS


def _gateway_pods(objects: list[Obj]) -> list[PodSpec]:
    service = one(objects, "Service", "-gateway")
    return [pod for pod in pod_specs(objects) if selects(service["spec"]["selector"], pod.labels)]


def _deployment_pod(objects: list[Obj]) -> PodSpec:
    deployment = one(objects, "Deployment", "-gateway")
    return next(pod_specs([deployment]))


def _config(objects: list[Obj]) -> GearshiftConfig:
    """The config file as the pods read it (the ConfigMap; gateway pods read it as it is)."""
    return parse_config(one(objects, "ConfigMap", "-config")["data"]["config.yaml"])


def _head_host(objects: list[Obj]) -> str:
    """KubeRay's head Service for the rendered RayCluster, as a host name in the namespace."""
    return f"{one(objects, 'RayCluster')['metadata']['name']}-head-svc.{NAMESPACE}.svc"


def _env(container: Obj) -> dict[str, Obj]:
    return {item["name"]: item for item in container.get("env") or []}


def test_the_gateway_runs_in_its_own_pods_by_default() -> None:
    assert DEFAULT in STANDALONE
    assert set(SCENARIOS) - set(STANDALONE) == {"gateway-in-head"}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_the_gateway_service_reaches_pods_that_serve_http(
    renderer: Renderer, scenario: str
) -> None:
    objects = renderer.objects(scenario)
    pods = _gateway_pods(objects)
    standalone = scenario in STANDALONE
    assert [pod.labels["app.kubernetes.io/component"] for pod in pods] == [
        "gateway" if standalone else "head"
    ]
    container = pods[0].spec["containers"][0]
    assert "http" in {port["name"] for port in container["ports"]}
    assert bool(kind(objects, "Deployment")) == standalone


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_the_head_gateway_is_reached_inside_the_cluster_only(
    renderer: Renderer, scenario: str
) -> None:
    """KubeRay's head Service is ClusterIP; with the gateway Deployment no Service of the chart
    but the admin one (ClusterIP) selects the head."""
    objects = renderer.objects(scenario)
    cluster = one(objects, "RayCluster")
    assert cluster["spec"]["headGroupSpec"]["serviceType"] == "ClusterIP"
    head_labels = cluster["spec"]["headGroupSpec"]["template"]["metadata"]["labels"]
    selecting = [
        service["metadata"]["name"]
        for service in kind(objects, "Service")
        if selects(service["spec"]["selector"], head_labels)
    ]
    expected = [f"{RELEASE}-gearshift-admin"]
    if scenario not in STANDALONE:
        expected.append(f"{RELEASE}-gearshift-gateway")
    assert sorted(selecting) == sorted(expected)
    # `gearshift status` works while the head is unready (no replica can serve).
    assert one(objects, "Service", "-admin")["spec"]["publishNotReadyAddresses"] is True


def _run_gateway_container(pod: PodSpec, tmp_path: Path) -> list[list[str]]:
    """Run the gateway container's command + args here, with `ray` and `gearshift` fakes
    that record their argv: what the pod would run, in order. The last one must be the
    container's main process (exec'd), so that SIGTERM reaches it and it drains."""
    container = next(c for c in pod.spec["containers"] if c["name"] == "gateway")
    fakes = tmp_path / "bin"
    fakes.mkdir()
    calls = tmp_path / "calls.jsonl"
    for name in ("ray", "gearshift"):
        fake = fakes / name
        fake.write_text(
            f"#!{sys.executable}\n"
            "import json, os, sys\n"
            f"with open({str(calls)!r}, 'a') as out:\n"
            f"    out.write(json.dumps([os.getpid(), {name!r}, *sys.argv[1:]]) + '\\n')\n"
        )
        fake.chmod(0o755)
    env = {"PATH": f"{fakes}:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp")}
    with subprocess.Popen(
        [*container["command"], *container.get("args", [])],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    ) as process:
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    recorded = [json.loads(line) for line in calls.read_text().splitlines()]
    assert recorded[-1][0] == process.pid, "the gateway command is not exec'd"
    return [call[1:] for call in recorded]


def _options(argv: list[str]) -> dict[str, str]:
    """``--flag value`` and ``--flag=value`` pairs of a command line."""
    found: dict[str, str] = {}
    at = 0
    while at < len(argv):
        arg = argv[at]
        if arg.startswith("--") and "=" in arg:
            key, value = arg.split("=", 1)
            found[key] = value
        elif arg.startswith("--") and at + 1 < len(argv) and not argv[at + 1].startswith("--"):
            found[arg] = argv[at + 1]
            at += 1
        elif arg.startswith("--"):
            found[arg] = ""
        at += 1
    return found


@pytest.mark.parametrize("scenario", STANDALONE)
def test_a_gateway_pod_joins_ray_then_serves_against_the_head(
    renderer: Renderer, scenario: str, tmp_path: Path
) -> None:
    objects = renderer.objects(scenario)
    values = values_of(scenario)
    config = _config(objects)
    head = _head_host(objects)
    gcs = f"{head}:{values['rayCluster']['gcsPort']}"
    pod = _deployment_pod(objects)

    ray, gateway = _run_gateway_container(pod, tmp_path)
    assert ray[:2] == ["ray", "start"]
    joined = _options(ray)
    assert joined["--address"] == gcs
    assert (joined["--num-cpus"], joined["--num-gpus"]) == ("0", "0")
    assert joined["--labels"] == "gearshift.io/role=gateway"  # not a worker: no replica lands

    assert gateway[:2] == ["gearshift", "gateway"]
    options = _options(gateway)
    container = pod.spec["containers"][0]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod.spec["volumes"]}
    assert volumes["config"]["configMap"]["name"] == f"{RELEASE}-gearshift-config"
    assert options == {
        "--address": gcs,
        "--config": f"{mounts['config']}/config.yaml",
        "--host": "0.0.0.0",
        "--port": str(config.gateway.port),
        "--admin-port": str(config.gateway.admin_port),
        "--batch-upstream": f"http://{head}:{config.gateway.port}",
    }
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert (ports["http"], ports["admin"]) == (config.gateway.port, config.gateway.admin_port)
    init = pod.spec["initContainers"]
    assert [c["name"] for c in init] == ["wait-for-head"]
    assert f"ray health-check --address {gcs} " in init[0]["args"][0]


def test_gearshift_gateway_has_the_flags_the_pod_gives_it(renderer: Renderer) -> None:
    args = _deployment_pod(renderer.objects("three-gpu-cpu")).spec["containers"][0]["args"]
    text = cli_help("gateway")
    missing = [flag for flag in args if flag.startswith("--") and flag not in text]
    assert not missing, f"gearshift gateway has no {missing}"


def test_a_command_override_runs_once_the_ray_node_joined(
    renderer: Renderer, tmp_path: Path
) -> None:
    override = ["gearshift", "gateway", "--address", "h:6379", "--wait", "600"]
    objects = renderer.render(
        DEFAULT, "--set-json", f"gateway.standalone.command={json.dumps(override)}"
    )
    ray, gateway = _run_gateway_container(_deployment_pod(objects), tmp_path)
    assert ray[:2] == ["ray", "start"]
    assert gateway == override


@pytest.mark.parametrize("scenario", STANDALONE)
def test_the_gateway_pods_take_the_admin_token_from_the_secret(
    renderer: Renderer, scenario: str
) -> None:
    objects = renderer.objects(scenario)
    auth = values_of(scenario)["auth"]
    secret = auth["existingSecret"] or f"{RELEASE}-gearshift-auth"
    pod = _deployment_pod(objects)
    env = _env(pod.spec["containers"][0])
    assert env["GEARSHIFT_ADMIN_TOKEN"] == {
        "name": "GEARSHIFT_ADMIN_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": secret, "key": auth["secretKeys"]["adminToken"]}},
    }
    if not auth["existingSecret"]:
        assert auth["secretKeys"]["adminToken"] in one(objects, "Secret")["data"]
    # The token reaches the process only through its environment: no file of it is mounted.
    secret_volumes = [v["secret"] for v in pod.spec["volumes"] if "secret" in v]
    assert [[item["key"] for item in v["items"]] for v in secret_volumes] == [
        [auth["secretKeys"]["keysFile"]]
    ]
    assert _config(objects).gateway.admin_token is None


@pytest.mark.parametrize("scenario", STANDALONE)
def test_the_gateway_pods_join_ray_with_kuberays_token(renderer: Renderer, scenario: str) -> None:
    objects = renderer.objects(scenario)
    pod = _deployment_pod(objects)
    cluster = one(objects, "RayCluster")
    for container in pod.containers():
        env = _env(container)
        if "authOptions" in cluster["spec"]:
            assert env["RAY_AUTH_MODE"]["value"] == cluster["spec"]["authOptions"]["mode"]
            assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {
                "name": cluster["metadata"]["name"],  # KubeRay's Secret for the cluster
                "key": "auth_token",
            }
        else:
            assert not {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN"} & set(env), container["name"]


def test_names_follow_kuberays_rules_for_a_release_starting_with_a_digit(
    renderer: Renderer,
) -> None:
    """KubeRay turns a leading digit of the names it derives into "r" (utils.CheckName)."""
    objects = renderer.render(DEFAULT, release="7b")
    assert one(objects, "RayCluster")["metadata"]["name"] == "7b-gearshift"
    container = _deployment_pod(objects).spec["containers"][0]
    assert _options(container["args"])["--address"] == "rb-gearshift-head-svc.llm.svc:6379"
    token = _env(container)["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert token["name"] == "rb-gearshift"


def _pre_stop_seconds(container: Obj) -> int:
    lifecycle = container.get("lifecycle")
    return int(lifecycle["preStop"]["sleep"]["seconds"]) if lifecycle else 0


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_a_stopping_gateway_is_unready_then_drains_within_its_grace(
    renderer: Renderer, scenario: str
) -> None:
    """Every pod running a gateway: /ready is the readiness probe (503 while draining), /health
    the liveness probe, and the grace period covers preStop + shutdown_drain_s +
    shutdown_timeout_s (the head: plus the controller's shutdown)."""
    objects = renderer.objects(scenario)
    values = values_of(scenario)
    gateway = _config(objects).gateway
    assert gateway.shutdown_drain_s == values["gateway"]["drainSeconds"] > 0
    pods = [
        pod
        for pod in pod_specs(objects)
        if pod.labels["app.kubernetes.io/component"] in {"head", "gateway"}
    ]
    assert len(pods) == (2 if scenario in STANDALONE else 1)
    for pod in pods:
        container = pod.spec["containers"][0]
        assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
        assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
        assert container["startupProbe"]["httpGet"] == {"path": "/health", "port": "http"}
        pre_stop = _pre_stop_seconds(container)
        assert pre_stop == values["gateway"]["preStopSleepSeconds"]
        needed = pre_stop + gateway.shutdown_drain_s + gateway.shutdown_timeout_s
        if pod.labels["app.kubernetes.io/component"] == "head":
            needed += values["head"]["shutdownSeconds"]
        assert pod.spec["terminationGracePeriodSeconds"] >= needed, pod.where


def test_by_default_the_gateway_drains_itself_without_a_pre_stop_sleep(
    renderer: Renderer,
) -> None:
    for pod in _gateway_pods(renderer.objects(DEFAULT)):
        assert "lifecycle" not in pod.spec["containers"][0]
        # drain 10 + shutdown_timeout_s 5, plus 5 s to exit
        assert pod.spec["terminationGracePeriodSeconds"] == 20


@pytest.mark.parametrize(
    ("override", "complaint"),
    [
        (
            ["--set", "gateway.standalone.terminationGracePeriodSeconds=20",
             "--set", "gateway.drainSeconds=30"],
            "gateway.standalone.terminationGracePeriodSeconds (20) must be at least 35",
        ),
        (
            ["--set", "head.terminationGracePeriodSeconds=40"],
            "head.terminationGracePeriodSeconds (40) must be at least 45",
        ),
        (
            ["--set", "config.gateway.shutdown_timeout_s=60",
             "--set", "gateway.standalone.terminationGracePeriodSeconds=60"],
            "must be at least 70",
        ),
        (
            ["--set", "config.gateway.shutdown_drain_s=3"],
            "config.gateway.shutdown_drain_s is set by the chart: use gateway.drainSeconds",
        ),
    ],
)  # fmt: skip
def test_a_grace_period_shorter_than_the_drain_is_refused(
    renderer: Renderer, override: list[str], complaint: str
) -> None:
    result = renderer.tools.run(renderer.tools.helm, *renderer.template_args(DEFAULT), *override)
    assert result.returncode != 0
    assert complaint in result.stderr


def test_the_gateway_deployment_keeps_a_disruption_budget_and_autoscales_on_request(
    renderer: Renderer,
) -> None:
    objects = renderer.objects(DEFAULT)
    deployment = one(objects, "Deployment", "-gateway")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pdb = one(objects, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert selects(pdb["spec"]["selector"]["matchLabels"], labels)
    assert not kind(objects, "HorizontalPodAutoscaler")

    objects = renderer.objects("gateway-autoscaled")
    deployment = one(objects, "Deployment", "-gateway")
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    hpa = one(objects, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 12)
    assert one(objects, "PodDisruptionBudget")["spec"]["minAvailable"] == 2
    spec = deployment["spec"]["template"]["spec"]
    assert (spec["terminationGracePeriodSeconds"], spec["priorityClassName"]) == (
        150,
        "gearshift-gateway",
    )

    objects = renderer.objects("gateway-in-head")
    for absent in ("Deployment", "PodDisruptionBudget", "HorizontalPodAutoscaler"):
        assert not kind(objects, absent)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_helm_test_calls_v1_models_through_the_gateway_service(
    renderer: Renderer, scenario: str
) -> None:
    objects = renderer.objects(scenario)
    pod = one(objects, "Pod", "-test-models")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    container = pod["spec"]["containers"][0]
    assert container["command"][-1].endswith("/helm-test.py")
    env = _env(container)
    port = values_of(scenario)["gateway"]["service"]["port"]
    assert env["GATEWAY_URL"]["value"] == f"http://{RELEASE}-gearshift-gateway.llm.svc:{port}"
    key = env["TEST_API_KEY"]["valueFrom"]["secretKeyRef"]
    assert key["optional"] is True
    assert "/v1/models" in one(objects, "ConfigMap", "-scripts")["data"]["helm-test.py"]
