"""The ``kubernetes:`` config section: off by default, every field described, clear errors."""

from __future__ import annotations

import pytest

from scheduler.config import GearshiftConfig, config_schema, parse_config
from scheduler.errors import ConfigError
from scheduler.types import Ownership


def test_off_by_default() -> None:
    settings = GearshiftConfig().kubernetes
    assert not settings.enabled and settings.worker_groups == []
    assert (settings.namespace, settings.ray_cluster, settings.kubeconfig) == (
        "default",
        "gearshift",
        None,
    )


def test_a_full_section_parses() -> None:
    settings = parse_config("""
kubernetes:
  enabled: true
  namespace: inference
  ray_cluster: gearshift-llm
  kubeconfig: ~/.kube/config
  sync_interval_s: 15
  scale_down_cooldown_s: 600
  worker_groups:
    - {name: h100, accelerator: h100, gpus_per_pod: 8, min_replicas: 1, max_replicas: 4,
       price_per_pod_hour: 21.5}
    - {name: l4-spot, accelerator: L4, max_replicas: 16, ownership: spot}
    - {name: cpu, accelerator: CPU, gpus_per_pod: 0, max_replicas: 2}
""").kubernetes
    h100 = settings.worker_group("h100")
    assert h100 is not None and h100.accelerator == "H100-SXM"  # canonical catalog name
    spot = settings.worker_group("l4-spot")
    assert spot is not None and spot.ownership is Ownership.SPOT and spot.gpus_per_pod == 1
    assert settings.worker_group("a100") is None


@pytest.mark.parametrize(
    ("section", "says"),
    [
        ("{worker_groups: [{name: a, accelerator: L4, min_replicas: 3, max_replicas: 2}]}",
         "kubernetes.worker_groups.0: min_replicas (3) is above max_replicas (2)"),
        ("{worker_groups: [{name: a, accelerator: CPU}]}",
         "a CPU worker group requests no GPUs: set gpus_per_pod: 0"),
        ("{worker_groups: [{name: a, accelerator: L4, gpus_per_pod: 0}]}",
         "a L4 worker group needs gpus_per_pod >= 1"),
        ("{worker_groups: [{name: a, accelerator: H300}]}", "Unknown accelerator 'H300'"),
        ("{worker_groups: [{name: a, accelerator: L4}, {name: a, accelerator: T4}]}",
         "worker group names must be unique; repeated: a"),
        ("{namespace: Bad_Namespace}", "kubernetes.namespace: String should match pattern"),
        ("{sync_interval_s: 0}", "kubernetes.sync_interval_s: Input should be greater than 0"),
        ("{replicas: 3}", "kubernetes.replicas: Extra inputs are not permitted"),
        ("{worker_groups: [{name: a, accelerator: L4, price_per_pod_hour: -1}]}",
         "price_per_pod_hour: Input should be greater than or equal to 0"),
    ],
)  # fmt: skip
def test_invalid_sections_name_the_field(section: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(f"kubernetes: {section}\n")
    assert says in str(caught.value)


def test_schema_describes_the_section() -> None:
    schema = config_schema()
    assert "kubernetes" in schema["properties"]
    fields = schema["$defs"]["WorkerGroupScaling"]["properties"]
    assert {"name", "accelerator", "gpus_per_pod", "min_replicas", "max_replicas"} <= set(fields)
    assert schema["$defs"]["KubernetesConfig"]["additionalProperties"] is False
