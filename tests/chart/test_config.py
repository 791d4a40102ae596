"""The config the chart renders is a valid Gearshift config that matches the RayCluster it
describes; values.schema.json is in step with the config model; the commands the pods run use
flags the CLI has."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from scheduler.config import GearshiftConfig, load_config
from tests.chart.rendering import (
    CHART,
    NAMESPACE,
    ROOT,
    SCENARIOS,
    Obj,
    Renderer,
    cli_help,
    one,
    values_of,
)

pytestmark = pytest.mark.chart

SCRIPTS = CHART / "files"


def rendered_config(objects: list[Obj], tmp_path: Path) -> GearshiftConfig:
    """The config the head's init containers write: ConfigMap + a token, through the chart's
    own render-config.py, then loaded as `gearshift serve` loads it."""
    config_map = one(objects, "ConfigMap", "-config")
    source = tmp_path / "config.yaml"
    source.write_text(config_map["data"]["config.yaml"])
    token = tmp_path / "admin-token"
    token.write_text("t" * 24 + "\n")
    out = tmp_path / "run" / "config.yaml"
    subprocess.run(
        [sys.executable, str(SCRIPTS / "render-config.py"), str(source), str(token), str(out)],
        check=True,
        capture_output=True,
    )
    assert out.stat().st_mode & 0o777 == 0o600
    return load_config(out)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_the_rendered_config_is_valid_and_owned_fields_are_set(
    renderer: Renderer, scenario: str, tmp_path: Path
) -> None:
    objects = renderer.objects(scenario)
    values = values_of(scenario)
    config = rendered_config(objects, tmp_path)
    assert config.gateway.admin_token == "t" * 24
    assert (config.gateway.host, config.gateway.admin_host) == ("0.0.0.0", "0.0.0.0")
    assert config.gateway.auth.keys_file == (
        f"/etc/gearshift/secret/{values['auth']['secretKeys']['keysFile']}"
    )
    assert config.kubernetes.enabled
    assert config.kubernetes.namespace == NAMESPACE
    if values["batchStore"]["enabled"]:
        assert config.batch.store_path == "/var/lib/gearshift/batch"
    user_models = [model["name"] for model in (values["config"] or {}).get("models", [])]
    assert [model.name for model in config.models] == user_models


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_the_controller_resizes_exactly_the_rendered_worker_groups(
    renderer: Renderer, scenario: str, tmp_path: Path
) -> None:
    objects = renderer.objects(scenario)
    config = rendered_config(objects, tmp_path)
    cluster = one(objects, "RayCluster")
    assert config.kubernetes.ray_cluster == cluster["metadata"]["name"]
    role = one(objects, "Role", "-raycluster")
    assert role["rules"][0]["resourceNames"] == [config.kubernetes.ray_cluster]
    groups = {group["groupName"]: group for group in cluster["spec"]["workerGroupSpecs"]}
    assert [g.name for g in config.kubernetes.worker_groups] == list(groups)
    for scaling in config.kubernetes.worker_groups:
        group = groups[scaling.name]
        assert (scaling.min_replicas, scaling.max_replicas) == (
            group["minReplicas"],
            group["maxReplicas"],
        )
        container = group["template"]["spec"]["containers"][0]
        limits = (container.get("resources") or {}).get("limits") or {}
        gpus = int(next((v for k, v in limits.items() if "gpu" in k), 0))
        assert gpus == scaling.gpus_per_pod
        script = container["args"][0]
        assert f"--group {scaling.name} " in script
        assert f"--ownership {scaling.ownership.value}" in script


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_the_config_ports_are_the_container_ports(renderer: Renderer, scenario: str) -> None:
    objects = renderer.objects(scenario)
    config = yaml.safe_load(one(objects, "ConfigMap", "-config")["data"]["config.yaml"])
    pods = [one(objects, "RayCluster")["spec"]["headGroupSpec"]["template"]["spec"]]
    if values_of(scenario)["gateway"]["standalone"]["enabled"]:
        pods.append(one(objects, "Deployment", "-gateway")["spec"]["template"]["spec"])
    for pod in pods:
        ports = {port["name"]: port["containerPort"] for port in pod["containers"][0]["ports"]}
        assert ports["http"] == config["gateway"]["port"]
        assert ports["admin"] == config["gateway"]["admin_port"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_gateway_pods_can_load_the_config_map_as_it_is(
    renderer: Renderer, scenario: str, tmp_path: Path
) -> None:
    """Gateway pods read the ConfigMap directly (no init step): it is a valid config without
    the admin token, which they take from GEARSHIFT_ADMIN_TOKEN."""
    source = tmp_path / "config.yaml"
    config_map = one(renderer.objects(scenario), "ConfigMap", "-config")
    source.write_text(config_map["data"]["config.yaml"])
    config = load_config(source)
    assert config.gateway.admin_token is None
    assert config.gateway.shutdown_drain_s == values_of(scenario)["gateway"]["drainSeconds"]


def test_a_secret_in_config_values_is_refused(renderer: Renderer) -> None:
    result = renderer.tools.run(
        renderer.tools.helm, *renderer.template_args("default"),
        "--set", "config.gateway.admin_token=abcdefghijklmnopqrstuvwxyz",
    )  # fmt: skip
    assert result.returncode != 0
    assert "admin_token must not be set in values" in result.stderr


def test_values_schema_is_generated_from_the_config_model() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "helm_values_schema.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("override", "complaint"),
    [
        ("config.gateway.bogus=1", "bogus"),
        ("config.models[0].name=m,config.models[0].engine=warp", "engine"),
        ("head.resurces.cpu=1", "resurces"),
        ("gpuGroups.x.gpuProduct=NVIDIA-L4", "accelerator"),
    ],
)
def test_values_schema_rejects_mistakes(renderer: Renderer, override: str, complaint: str) -> None:
    for binary in (renderer.tools.helm, renderer.tools.helm3):
        result = renderer.tools.run(binary, *renderer.template_args("default"), "--set", override)
        assert result.returncode != 0, override
        assert complaint in result.stderr


def _flags(script: str, command: str) -> set[str]:
    """The --flags given to ``command`` in a shell script (continued lines joined)."""
    joined = script.replace("\\\n", " ")
    flags: set[str] = set()
    for line in joined.splitlines():
        if command in line:
            tail = line.split(command, 1)[1]
            flags |= set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", tail))
    return flags


def test_the_head_runs_gearshift_with_flags_it_has(renderer: Renderer) -> None:
    cluster = one(renderer.objects("three-gpu-cpu"), "RayCluster")
    script = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["args"][0]
    node_flags = _flags(script, "gearshift node start")
    serve_flags = _flags(script, "gearshift serve")
    assert {"--head", "--port"} <= node_flags
    assert {"--address", "--config", "--session-file", "--ready-timeout"} <= serve_flags
    for flags, command in ((node_flags, ("node", "start")), (serve_flags, ("serve",))):
        text = cli_help(*command)
        missing = [flag for flag in flags if flag not in text]
        assert not missing, f"gearshift {' '.join(command)} has no {missing}"
    init = cluster["spec"]["headGroupSpec"]["template"]["spec"]["initContainers"]
    assert [c["name"] for c in init] == ["render-config", "check-config"]
    assert init[1]["command"][:3] == ["gearshift", "config", "validate"]
