"""Security properties of every rendered scenario: least-privilege RBAC, only the gateway
exposed, Pod Security "restricted" on every non-GPU pod, no secret outside a Secret, and
NetworkPolicies that leave only the gateway port open to the outside."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import pytest
import yaml

from tests.chart.rendering import (
    RELEASE,
    SCENARIOS,
    STANDALONE_SCENARIOS,
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

# The whole of what the controller may do (scheduler/controlplane/kubernetes_client.py).
ALLOWED_RULES = {
    ("ClusterRole", "", "nodes"): {"get", "list", "watch"},
    ("Role", "ray.io", "rayclusters"): {"get", "patch"},
}
DANGEROUS_VERBS = {"*", "escalate", "bind", "impersonate", "create", "delete", "deletecollection"}


def _rules(objects: list[Obj]) -> Iterator[tuple[Obj, Obj]]:
    for role in kind(objects, "Role") + kind(objects, "ClusterRole"):
        for rule in role.get("rules") or []:
            yield role, rule


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_rbac_is_the_least_the_controller_needs(renderer: Renderer, scenario: str) -> None:
    objects = renderer.objects(scenario)
    cluster = one(objects, "RayCluster")["metadata"]["name"]
    granted: dict[tuple[str, str, str], set[str]] = {}
    for role, rule in _rules(objects):
        fields = [*rule.get("apiGroups", []), *rule.get("resources", []), *rule["verbs"]]
        fields += rule.get("resourceNames", []) + rule.get("nonResourceURLs", [])
        assert "*" not in fields, f"wildcard in {role['metadata']['name']}: {rule}"
        assert not rule.get("nonResourceURLs"), rule
        assert not DANGEROUS_VERBS & set(rule["verbs"]), rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                assert "secret" not in resource, f"{role['metadata']['name']} grants {resource}"
                assert "/" not in resource, f"subresource {resource} (pods/exec and the like)"
                granted.setdefault((role["kind"], group, resource), set()).update(rule["verbs"])
                if resource == "rayclusters":
                    assert rule.get("resourceNames") == [cluster], rule
    assert granted == ALLOWED_RULES


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_only_the_head_pod_gets_an_api_token(renderer: Renderer, scenario: str) -> None:
    objects = renderer.objects(scenario)
    bound = {
        (subject["name"], subject["namespace"])
        for binding in kind(objects, "RoleBinding") + kind(objects, "ClusterRoleBinding")
        for subject in binding["subjects"]
    }
    for pod in pod_specs(objects):
        if pod.labels.get("app.kubernetes.io/component") == "head":
            assert pod.spec["automountServiceAccountToken"] is True
            assert {name for name, _ in bound} == {pod.spec["serviceAccountName"]}
        else:
            assert pod.spec["automountServiceAccountToken"] is False, pod.where
            assert pod.spec["serviceAccountName"] not in {name for name, _ in bound}, pod.where


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_only_the_gateway_service_can_be_exposed(renderer: Renderer, scenario: str) -> None:
    objects = renderer.objects(scenario)
    gateway_type = values_of(scenario)["gateway"]["service"]["type"]
    for service in kind(objects, "Service"):
        name = service["metadata"]["name"]
        service_type = service["spec"].get("type", "ClusterIP")
        if name == f"{RELEASE}-gearshift-gateway":
            assert service_type == gateway_type
            assert [port["name"] for port in service["spec"]["ports"]] == ["http"]
        else:
            assert service_type == "ClusterIP", f"{name} is {service_type}"
            assert not service["spec"].get("externalIPs"), name
    admin = one(objects, "Service", "-admin")
    assert admin["spec"]["type"] == "ClusterIP"
    assert [port["targetPort"] for port in admin["spec"]["ports"]] == ["admin"]
    assert not {"Ingress", "HTTPRoute", "Route"} & {obj["kind"] for obj in objects}


def _effective(pod: PodSpec, container: Obj, key: str) -> object:
    return (container.get("securityContext") or {}).get(
        key, (pod.spec.get("securityContext") or {}).get(key)
    )


def _restricted_violations(pod: PodSpec) -> list[str]:
    found = []
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.spec.get(field):
            found.append(f"{pod.where}: {field}")
    for volume in pod.spec.get("volumes") or []:
        if "hostPath" in volume:
            found.append(f"{pod.where}: hostPath volume {volume['name']}")
    for container in pod.containers():
        where = f"{pod.where} {container['name']}"
        context = container.get("securityContext") or {}
        if _effective(pod, container, "runAsNonRoot") is not True:
            found.append(f"{where}: runAsNonRoot is not true")
        if _effective(pod, container, "runAsUser") == 0:
            found.append(f"{where}: runs as uid 0")
        if context.get("allowPrivilegeEscalation") is not False:
            found.append(f"{where}: allowPrivilegeEscalation is not false")
        if context.get("privileged"):
            found.append(f"{where}: privileged")
        if "ALL" not in ((context.get("capabilities") or {}).get("drop") or []):
            found.append(f"{where}: capabilities not all dropped")
        if (context.get("capabilities") or {}).get("add"):
            found.append(f"{where}: adds capabilities")
        seccomp = _effective(pod, container, "seccompProfile") or {}
        if not isinstance(seccomp, dict) or seccomp.get("type") != "RuntimeDefault":
            found.append(f"{where}: seccompProfile is not RuntimeDefault")
    return found


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_non_gpu_pod_is_pod_security_restricted(renderer: Renderer, scenario: str) -> None:
    pods = list(pod_specs(renderer.objects(scenario)))
    non_gpu = [pod for pod in pods if not pod.uses_gpu]
    expected = {"head", "test"}
    if values_of(scenario)["gateway"]["standalone"]["enabled"]:
        expected.add("gateway")
    assert expected <= {p.labels.get("app.kubernetes.io/component") for p in non_gpu}
    found = [problem for pod in non_gpu for problem in _restricted_violations(pod)]
    assert not found, "\n".join(found)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_gpu_pods_are_restricted_by_default_too(renderer: Renderer, scenario: str) -> None:
    if values_of(scenario)["gpuGroupDefaults"]["containerSecurityContext"]:
        pytest.skip("this scenario relaxes GPU pods on purpose")
    found = [
        problem
        for pod in pod_specs(renderer.objects(scenario))
        if pod.uses_gpu
        for problem in _restricted_violations(pod)
    ]
    assert not found, "\n".join(found)


def _secret_strings(secret: Obj) -> set[str]:
    """Every value of a Secret, encoded and decoded, and the long strings inside JSON values."""
    found: set[str] = set()
    decoded = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
    decoded.update(secret.get("stringData") or {})
    found.update((secret.get("data") or {}).values())
    for value in decoded.values():
        found.add(value.strip())
        try:
            document = json.loads(value)
        except ValueError:
            continue
        found.update(_long_strings(document))
    return {text for text in found if len(text) >= 16}


def _long_strings(document: object) -> Iterator[str]:
    if isinstance(document, str):
        yield document
    elif isinstance(document, dict):
        for value in document.values():
            yield from _long_strings(value)
    elif isinstance(document, list):
        for value in document:
            yield from _long_strings(value)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_no_secret_value_outside_secrets(renderer: Renderer, scenario: str) -> None:
    objects = renderer.objects(scenario)
    secrets = kind(objects, "Secret")
    strings = set().union(*(_secret_strings(secret) for secret in secrets)) if secrets else set()
    others = [obj for obj in objects if obj["kind"] != "Secret"]
    for obj in others:
        text = yaml.safe_dump(obj)
        leaked = [s for s in strings if s in text]
        assert not leaked, f"{obj['kind']}/{obj['metadata']['name']} carries {leaked}"
    if values_of(scenario)["auth"]["existingSecret"]:
        assert not secrets, "with existingSecret the chart makes no Secret"
    else:
        assert strings, "the chart-made Secret has an admin token and a key file"


def test_the_sample_key_file_reaches_only_its_secret(renderer: Renderer) -> None:
    """The single-gpu scenario gives a real key file in values: its salt and digest are in the
    Secret and nowhere else (checked above), so the check above is not vacuous."""
    objects = renderer.objects("single-gpu")
    secret = one(objects, "Secret")
    strings = _secret_strings(secret)
    assert "1f6249cae44f6ee8f7d9d100e862329f" in strings
    assert "28401d5c976481784d5ab6ad88bee3883929438016867fb749977017063a1b9d" in strings
    rendered = yaml.safe_dump_all([o for o in objects if o["kind"] != "Secret"])
    assert "28401d5c976481784d5ab6ad88bee3883929438016867fb749977017063a1b9d" not in rendered


def test_values_yaml_holds_no_secret() -> None:
    values = values_of("default")
    assert values["auth"]["existingSecret"] == ""
    assert values["auth"]["keysFile"] == ""
    assert "admin_token" not in json.dumps(values["config"])


def _release_selector() -> dict[str, str]:
    return {"app.kubernetes.io/name": "gearshift", "app.kubernetes.io/instance": RELEASE}


def _is_release_peer(peer: Obj) -> bool:
    return set(peer) == {"podSelector"} and selects(
        _release_selector(), peer["podSelector"].get("matchLabels") or {}
    )


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_network_policies_leave_only_the_gateway_open(renderer: Renderer, scenario: str) -> None:
    objects = renderer.objects(scenario)
    values = values_of(scenario)
    policies = kind(objects, "NetworkPolicy")
    assert policies
    pods = list(pod_specs(objects))
    gateway_component = "gateway" if values["gateway"]["standalone"]["enabled"] else "head"
    for pod in pods:  # every pod is selected by some policy: default-deny for ingress
        assert any(
            selects(p["spec"]["podSelector"].get("matchLabels") or {}, pod.labels) for p in policies
        ), pod.where
    for policy in policies:
        selector = policy["spec"]["podSelector"].get("matchLabels") or {}
        selected = [pod for pod in pods if selects(selector, pod.labels)]
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        for rule in policy["spec"].get("ingress") or []:
            peers = rule.get("from")
            if peers and all(_is_release_peer(peer) for peer in peers):
                continue  # pods of this release talking to each other
            ports = {port["port"] for port in rule.get("ports") or []}
            components = {pod.labels["app.kubernetes.io/component"] for pod in selected}
            if ports == {"admin"}:
                assert values["networkPolicy"]["adminFrom"], "admin opened without adminFrom"
                assert peers == values["networkPolicy"]["adminFrom"]
                assert components == {"head"}
                continue
            assert ports == {"http"}, f"{policy['metadata']['name']} opens {ports or 'all'}"
            assert components == {gateway_component}, policy["metadata"]["name"]
            if values["networkPolicy"]["gatewayFrom"]:
                assert peers, "gatewayFrom given, yet the gateway is open to anyone"


def _admits_from(policy: Obj, source: PodSpec) -> bool:
    """Whether one of the policy's rules admits ``source``'s pods on every port."""
    for rule in policy["spec"].get("ingress") or []:
        if rule.get("ports"):
            continue
        for peer in rule.get("from") or []:
            if set(peer) == {"podSelector"} and selects(
                peer["podSelector"].get("matchLabels") or {}, source.labels
            ):
                return True
    return False


@pytest.mark.parametrize("scenario", STANDALONE_SCENARIOS)
def test_gateway_pods_reach_the_head_and_the_workers(renderer: Renderer, scenario: str) -> None:
    """The gateway pods' Ray node and driver talk to the head (GCS, the controller actor) and
    are called back; they proxy to the engines on the workers and relay the Batch API to the
    head's gateway port. Ray's ports are not fixed: the release's pods admit each other on
    every port (egress is open). From outside, the head admits nothing but `adminFrom`."""
    objects = renderer.objects(scenario)
    policies = kind(objects, "NetworkPolicy")
    by_component: dict[str, list[PodSpec]] = {}
    for pod in pod_specs(objects):
        by_component.setdefault(pod.labels["app.kubernetes.io/component"], []).append(pod)
    gateway, head = by_component["gateway"][0], by_component["head"][0]
    for pod in [head, *by_component.get("worker", []), gateway]:
        selecting = [
            p for p in policies if selects(p["spec"]["podSelector"]["matchLabels"], pod.labels)
        ]
        assert any(_admits_from(policy, gateway) for policy in selecting), pod.where
        assert any(_admits_from(policy, head) for policy in selecting), pod.where
    for policy in policies:
        if not selects(policy["spec"]["podSelector"]["matchLabels"], head.labels):
            continue
        for rule in policy["spec"].get("ingress") or []:
            if {port["port"] for port in rule.get("ports") or []} == {"admin"}:
                continue  # networkPolicy.adminFrom
            assert rule.get("from"), policy["metadata"]["name"]
            assert all(_is_release_peer(peer) for peer in rule["from"]), policy["metadata"]["name"]
