"""The config model: the demo validates, bad files fail with the path named, every field is
described in the JSON schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from scheduler.config import (
    GearshiftConfig,
    config_schema,
    demo_config,
    demo_config_text,
    load_config,
    parse_config,
)
from scheduler.errors import ConfigError
from scheduler.types import Ownership, TrafficClass

REPO = Path(__file__).resolve().parents[3]


def test_demo_config_validates() -> None:
    config = demo_config()
    assert isinstance(config, GearshiftConfig)
    groups = {g.name: g for g in config.fleet.node_groups}
    assert set(groups) == {"h100", "a100", "l4", "cpu"}
    assert groups["a100"].ownership is Ownership.OWNED
    assert groups["cpu"].is_cpu and not groups["l4"].is_cpu
    assert groups["h100"].node_price_per_hour() == pytest.approx(2.69)  # the catalog default
    assert groups["l4"].node_ids() == ["l4-0", "l4-1"]
    assert [m.name for m in config.models] == ["llama-3.1-8b", "qwen2.5-0.5b"]
    assert config.traffic_classes.targets(TrafficClass.INTERACTIVE).ttft_s == 0.5


def test_examples_demo_fleet_is_byte_identical_to_the_packaged_one() -> None:
    packaged = (REPO / "scheduler" / "demo_fleet.yaml").read_bytes()
    assert (REPO / "examples" / "demo-fleet.yaml").read_bytes() == packaged
    assert demo_config_text().encode("utf-8") == packaged


def test_load_config_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(demo_config_text(), encoding="utf-8")
    assert load_config(path) == demo_config()


def test_load_config_names_an_unreadable_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="nope.yaml: cannot read"):
        load_config(missing)


def test_an_empty_file_is_the_default_config() -> None:
    assert parse_config("") == GearshiftConfig()


_FLEET = "fleet:\n  node_groups:\n"
_PROFILES = (
    "routing:\n  plugins: [{name: best, type: max-score-picker}]\n  profiles:\n"
    "    interactive: {picker: best, filters: [nope]}\n"
    "    standard: {picker: best}\n    batch: {picker: best}\n"
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            _FLEET + "    - {name: g, accelerator: H100-SMX}\n",
            [
                "fleet.node_groups.0.accelerator: Unknown accelerator 'H100-SMX'",
                "Did you mean H100-SXM",
            ],
            id="unknown-accelerator-with-suggestion",
        ),
        pytest.param(
            "fleets: {}\n", ["  fleets: Extra inputs are not permitted"], id="unknown-top-level-key"
        ),
        pytest.param(
            _FLEET + "    - {name: g, accelerator: L4, colour: red}\n",
            ["fleet.node_groups.0.colour: Extra inputs"],
            id="unknown-nested-key",
        ),
        pytest.param(
            _FLEET + "    - {name: g, accelerator: L4}\n    - {name: g, accelerator: T4}\n",
            ["fleet.node_groups: node group names must be unique; repeated: g"],
            id="duplicate-group-names",
        ),
        pytest.param(
            _FLEET + "    - {name: c, accelerator: CPU, accelerators_per_node: 2}\n",
            ["fleet.node_groups.0: a CPU node counts as one accelerator"],
            id="cpu-group-with-two-accelerators",
        ),
        pytest.param(
            _FLEET + "    - {name: g, accelerator: L4, cpu: {cores: 4}}\n",
            ["fleet.node_groups.0: `cpu` describes CPU nodes only"],
            id="gpu-group-with-cpu-spec",
        ),
        pytest.param(
            _FLEET + "    - {name: Bad_Name, accelerator: L4}\n",
            ["fleet.node_groups.0.name"],
            id="group-name-pattern",
        ),
        pytest.param(
            "models:\n  - {name: m, catalog: llama-3.1-8b, hf_config: /x}\n",
            ["models.0: give one architecture source, not catalog and hf_config"],
            id="two-architecture-sources",
        ),
        pytest.param(
            "models:\n  - {name: m, catalog: llama-9}\n",
            ["models.0: Unknown model 'llama-9'"],
            id="unknown-catalog-model",
        ),
        pytest.param(
            "models:\n  - {name: my-model}\n",
            [
                "models.0: `my-model` is not a catalog model; set catalog, architecture, "
                "hf_config or local weights"
            ],
            id="name-is-not-a-catalog-model",
        ),
        pytest.param(
            "models:\n  - {name: qwen2.5-0.5b, accelerators: [L44]}\n",
            ["models.0.accelerators: Unknown accelerator 'L44'"],
            id="unknown-accelerator-in-allowlist",
        ),
        pytest.param(
            "models:\n  - {name: qwen2.5-0.5b}\n  - {name: qwen2.5-0.5b}\n",
            ["models: model names must be unique"],
            id="duplicate-models",
        ),
        pytest.param(
            _PROFILES,
            ["routing: profile interactive refers to unknown plugins ['nope']"],
            id="profile-refers-to-unknown-plugin",
        ),
        pytest.param(
            "routing:\n  plugins: [{name: best, type: max-score-picker}]\n"
            "  profiles: {interactive: {picker: best}}\n",
            ["routing: a profile is needed for every class", "standard", "batch"],
            id="profile-missing-for-a-class",
        ),
        pytest.param(
            "traffic_classes:\n  interactive: {engine_priority: 1}\n",
            ["traffic_classes.interactive: set at least one of ttft_s, tpot_s, deadline_s"],
            id="traffic-class-without-a-target",
        ),
        pytest.param(
            "placement: {gpu_memory_utilization: 1.5}\n",
            ["placement.gpu_memory_utilization:"],
            id="out-of-range",
        ),
        pytest.param(
            "gateway: {admin_token: short}\n", ["gateway.admin_token:"], id="token-too-short"
        ),
    ],
)
def test_bad_config_names_the_path(text: str, expected: list[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source="fleet.yaml")
    message = str(caught.value)
    assert message.startswith("fleet.yaml: ")
    for fragment in expected:
        assert fragment in message, message


def test_every_bad_field_is_listed_once_per_line() -> None:
    text = "fleets: {}\nplacement: {interval_s: 0}\n" + _FLEET + "    - {name: g, accelerator: Q}\n"
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source="f.yaml")
    lines = str(caught.value).splitlines()
    assert lines[0] == "f.yaml: 3 invalid field(s)"
    paths = sorted(line.split(":")[0].strip() for line in lines[1:] if line.startswith("  "))
    assert paths == ["fleet.node_groups.0.accelerator", "fleets", "placement.interval_s"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("- a\n- b\n", "fleet.yaml: the top level must be a mapping, not list"),
        ("42\n", "fleet.yaml: the top level must be a mapping, not int"),
        ("just text\n", "fleet.yaml: the top level must be a mapping, not str"),
        ("fleet: [\n", "fleet.yaml: not valid YAML"),
        ("a: b: c\n", "fleet.yaml: not valid YAML"),
        ("\tfleet: {}\n", "fleet.yaml: not valid YAML"),
    ],
)
def test_non_mapping_and_invalid_yaml(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source="fleet.yaml")
    assert str(caught.value).startswith(expected)


def _properties(node: Any, where: str) -> list[tuple[str, dict[str, Any]]]:
    """Every (path, property schema) under ``node``, however deeply nested."""
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        for name, prop in (node.get("properties") or {}).items():
            found.append((f"{where}.{name}", prop))
        for key, value in node.items():
            found.extend(_properties(value, f"{where}/{key}"))
    elif isinstance(node, list):
        for index, item in enumerate(node):
            found.extend(_properties(item, f"{where}[{index}]"))
    return found


def test_every_schema_field_has_a_description() -> None:
    schema = config_schema()
    properties = _properties(schema, "#")
    definitions = schema.get("$defs", {})
    # The walk reached every definition that has fields, not just the root.
    assert {"NodeGroup", "ModelConfig", "PluginSpec", "GatewayConfig"} <= set(definitions)
    described = {path.split("/")[-1] for path, _ in properties}
    assert any(p.startswith("NodeGroup.") for p in described)
    assert len(properties) > 60
    missing = [path for path, prop in properties if not str(prop.get("description", "")).strip()]
    assert not missing, missing


def test_schema_rejects_unknown_keys_everywhere() -> None:
    schema = config_schema()
    objects = [schema, *(d for d in schema["$defs"].values() if "properties" in d)]
    loose = [d.get("title") for d in objects if d.get("additionalProperties") is not False]
    assert not loose, f"sections that accept unknown keys: {loose}"


def test_vllm_models_need_weights_and_local_weights_must_exist(tmp_path: Path) -> None:
    missing = tmp_path / "absent"
    for body, expected in (
        ("{name: m, engine: vllm}", "engine vllm needs `weights`"),
        (f"{{name: m, engine: vllm, weights: {missing}}}", "gearshift dev tiny-model"),
    ):
        with pytest.raises(ConfigError) as caught:
            parse_config(f"models:\n  - {body}\n")
        assert expected in str(caught.value)


def test_local_weights_config_gives_the_architecture(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(
        '{"model_type": "llama", "hidden_size": 256, "intermediate_size": 512,'
        ' "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,'
        ' "vocab_size": 300, "max_position_embeddings": 2048}'
    )
    config = parse_config(f"models:\n  - {{name: tiny, engine: vllm, weights: {tmp_path}}}\n")
    architecture = config.models[0].resolved_architecture
    assert (architecture.num_layers, architecture.head_dim) == (2, 64)
