"""Render the Helm chart with real `helm` binaries and walk what comes out.

``Renderer`` runs ``helm template`` once per values scenario (the default values and each
``helm/gearshift/ci/*-values.yaml``) and caches the parsed objects; the helpers find every pod
spec (Pods, Deployments, the RayCluster's head and worker templates) and its containers.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "gearshift"
GEARSHIFT = Path(sys.executable).parent / "gearshift"
RELEASE = "rel"
NAMESPACE = "llm"
DEFAULT = "default"
SCENARIOS = [
    DEFAULT,
    *sorted(p.name.removesuffix("-values.yaml") for p in CHART.glob("ci/*-values.yaml")),
]

Obj = dict[str, Any]


def values_file(scenario: str) -> Path | None:
    return None if scenario == DEFAULT else CHART / "ci" / f"{scenario}-values.yaml"


def values_of(scenario: str) -> dict[str, Any]:
    """The scenario's values file merged over values.yaml (maps deep, lists replaced)."""
    merged: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    path = values_file(scenario)
    if path is not None:
        _merge(merged, yaml.safe_load(path.read_text()) or {})
    return merged


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> None:
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


# The scenarios with the gateway Deployment (`gateway.standalone.enabled`, the default).
STANDALONE_SCENARIOS = [s for s in SCENARIOS if values_of(s)["gateway"]["standalone"]["enabled"]]


@dataclass
class Tools:
    helm: Path
    helm3: Path
    kubectl: Path
    home: Path

    def env(self) -> dict[str, str]:
        """Helm's own directories in a scratch folder; no cluster."""
        return {
            **os.environ,
            "HELM_CACHE_HOME": str(self.home / "cache"),
            "HELM_CONFIG_HOME": str(self.home / "config"),
            "HELM_DATA_HOME": str(self.home / "data"),
            "KUBECONFIG": os.devnull,
        }

    def run(self, binary: Path, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(binary), *args], capture_output=True, text=True, env=self.env(), timeout=120
        )


@dataclass
class Renderer:
    tools: Tools
    _cache: dict[tuple[str, str], list[Obj]] = field(default_factory=dict)

    def template_args(self, scenario: str) -> list[str]:
        args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
        path = values_file(scenario)
        return [*args, "--values", str(path)] if path else args

    def render(self, scenario: str, *extra: str, release: str = RELEASE) -> list[Obj]:
        """``helm template`` of a scenario with extra arguments (``--set`` ...), uncached."""
        args = self.template_args(scenario)
        args[1] = release
        result = self.tools.run(self.tools.helm, *args, *extra)
        assert result.returncode == 0, f"helm template {scenario} {extra}:\n{result.stderr}"
        return [doc for doc in yaml.safe_load_all(result.stdout) if doc]

    def objects(self, scenario: str, *, helm3: bool = False) -> list[Obj]:
        key = (scenario, "helm3" if helm3 else "helm")
        if key not in self._cache:
            binary = self.tools.helm3 if helm3 else self.tools.helm
            result = self.tools.run(binary, *self.template_args(scenario))
            assert result.returncode == 0, f"helm template {scenario}:\n{result.stderr}"
            self._cache[key] = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
        return self._cache[key]


def kind(objects: list[Obj], name: str) -> list[Obj]:
    return [obj for obj in objects if obj["kind"] == name]


def one(objects: list[Obj], kind_name: str, suffix: str = "") -> Obj:
    found = [o for o in kind(objects, kind_name) if o["metadata"]["name"].endswith(suffix)]
    assert len(found) == 1, f"expected one {kind_name} *{suffix}, found {len(found)}"
    return found[0]


@dataclass(frozen=True)
class PodSpec:
    """A pod spec with where it lives and its pod labels."""

    where: str
    spec: Obj
    labels: Mapping[str, str]

    def containers(self) -> Iterator[Obj]:
        yield from self.spec.get("initContainers") or []
        yield from self.spec.get("containers") or []

    @property
    def uses_gpu(self) -> bool:
        return any(
            "gpu" in resource.lower()
            for container in self.containers()
            for resource in ((container.get("resources") or {}).get("limits") or {})
        )


def pod_specs(objects: list[Obj]) -> Iterator[PodSpec]:
    """Every pod spec the chart renders, wherever it is nested."""
    for obj in objects:
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] == "Pod":
            yield PodSpec(name, obj["spec"], obj["metadata"].get("labels") or {})
        elif obj["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
            template = obj["spec"]["template"]
            yield PodSpec(name, template["spec"], template["metadata"].get("labels") or {})
        elif obj["kind"] == "RayCluster":
            head = obj["spec"]["headGroupSpec"]["template"]
            yield PodSpec(f"{name} head", head["spec"], head["metadata"].get("labels") or {})
            for group in obj["spec"].get("workerGroupSpecs") or []:
                template = group["template"]
                yield PodSpec(
                    f"{name} worker {group['groupName']}",
                    template["spec"],
                    template["metadata"].get("labels") or {},
                )


def selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def cli_help(*command: str) -> str:
    """``gearshift <command> --help``, wide enough that no flag is wrapped."""
    result = subprocess.run(
        [str(GEARSHIFT), *command, "--help"],
        capture_output=True,
        text=True,
        check=True,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin", "TERM": "dumb"},
    )
    return result.stdout
