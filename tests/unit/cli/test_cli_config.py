"""``gearshift config validate | schema | demo``: exit codes, summaries and per-field errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner, Result

from scheduler.cli import app
from scheduler.config import config_schema, load_config, parse_config

VALID = """
fleet:
  node_groups:
    - name: h100
      accelerator: H100
      accelerators_per_node: 8
      nodes: 2
    - name: l4
      accelerator: L4
      nodes: 3
      ownership: spot
      price_per_node_hour: 0.5
    - name: cpu
      accelerator: CPU
      cpu: {cores: 32, memory_gib: 128}
models:
  - name: llama-3.1-8b
    replicas: 2
  - name: big
    catalog: llama-3.1-70b
    tensor_parallel: 4
    accelerators: [H100-SXM]
"""

TWO_BAD_FIELDS = """
fleet:
  node_groups:
    - name: gpus
      accelerator: H999
    - name: cpus
      accelerator: CPU
      nodes: -1
"""

LLAMA_HF_CONFIG = {
    "model_type": "llama",
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "num_hidden_layers": 16,
    "vocab_size": 128256,
    "max_position_embeddings": 131072,
    "tie_word_embeddings": True,
}


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def write(tmp_path: Path, text: str, name: str = "fleet.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_valid_config_prints_a_summary_and_exits_0(tmp_path: Path) -> None:
    path = write(tmp_path, VALID)
    result = invoke("config", "validate", str(path), "-o", "json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    config = load_config(path)
    groups = config.fleet.node_groups
    assert summary["valid"] is True
    assert summary["file"] == str(path)
    assert summary["totals"] == {
        "node_groups": 3,
        "nodes": 6,
        "accelerators": 20,
        "models": 2,
        "replicas": 3,
        "fleet_price_per_hour": pytest.approx(
            sum(group.node_price_per_hour() * group.nodes for group in groups)
        ),
    }
    assert summary["accelerators"] == {"H100-SXM": 16, "L4": 3, "CPU": 1}
    assert [g["name"] for g in summary["node_groups"]] == ["h100", "l4", "cpu"]
    assert summary["node_groups"][1]["price_per_hour"] == pytest.approx(1.5)
    assert [m["name"] for m in summary["models"]] == ["llama-3.1-8b", "big"]
    assert summary["models"][1]["source"] == "catalog llama-3.1-70b"


def test_valid_config_table_and_yaml(tmp_path: Path) -> None:
    path = write(tmp_path, VALID)
    table = invoke("config", "validate", str(path))
    assert table.exit_code == 0
    assert "valid" in table.stdout
    assert "h100" in table.stdout
    as_yaml = invoke("config", "validate", str(path), "-o", "yaml")
    as_json = invoke("config", "validate", str(path), "-o", "json")
    assert yaml.safe_load(as_yaml.stdout) == json.loads(as_json.stdout)


def test_every_bad_field_is_reported_on_stderr_with_exit_2(tmp_path: Path) -> None:
    path = write(tmp_path, TWO_BAD_FIELDS)
    result = invoke("config", "validate", str(path))
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert "2 invalid field(s)" in lines[0]
    accelerator_line = next(line for line in lines if "fleet.node_groups.0.accelerator" in line)
    assert "H999" in accelerator_line
    assert any("fleet.node_groups.1.nodes" in line for line in lines)


@pytest.mark.parametrize(
    "name, text",
    [
        ("missing.yaml", None),
        ("broken.yaml", "fleet: [unclosed\n"),
        ("list.yaml", "- a\n- b\n"),
    ],
)
def test_unreadable_or_malformed_file_is_one_line_and_exit_2(
    tmp_path: Path, name: str, text: str | None
) -> None:
    path = tmp_path / name if text is None else write(tmp_path, text, name)
    result = invoke("config", "validate", str(path))
    assert result.exit_code == 2
    assert str(path) in result.stderr
    if text is None:
        assert len(result.stderr.strip().splitlines()) == 1


def test_brackets_in_a_path_are_printed_not_read_as_markup(tmp_path: Path) -> None:
    path = tmp_path / "[prod]" / "fleet.yaml"
    result = invoke("config", "validate", str(path))
    assert result.exit_code == 2
    assert "[prod]" in result.stderr


def test_unreadable_hf_config_is_a_field_error(tmp_path: Path) -> None:
    path = write(tmp_path, f"models:\n  - name: custom\n    hf_config: {tmp_path / 'none.json'}\n")
    result = invoke("config", "validate", str(path))
    assert result.exit_code == 2
    assert "models.0.hf_config" in result.stderr


def test_readable_hf_config_validates(tmp_path: Path) -> None:
    hf = tmp_path / "config.json"
    hf.write_text(json.dumps(LLAMA_HF_CONFIG), encoding="utf-8")
    path = write(tmp_path, f"models:\n  - name: custom\n    hf_config: {hf}\n")
    result = invoke("config", "validate", str(path), "-o", "json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["models"][0]["source"] == f"hf_config {hf}"


def test_schema_is_the_config_models_schema_in_json_and_yaml() -> None:
    as_json = invoke("config", "schema")
    assert as_json.exit_code == 0
    schema = json.loads(as_json.stdout)
    assert {"fleet", "models"} <= set(schema["properties"])
    assert schema == config_schema()
    as_yaml = invoke("config", "schema", "-o", "yaml")
    assert as_yaml.exit_code == 0
    assert yaml.safe_load(as_yaml.stdout) == schema


def test_schema_has_no_table_format() -> None:
    assert invoke("config", "schema", "-o", "table").exit_code == 2


def test_demo_prints_a_config_that_validates() -> None:
    result = invoke("config", "demo")
    assert result.exit_code == 0, result.stderr
    config = parse_config(result.stdout, source="demo")
    assert config.fleet.node_groups
    assert config.models


def _console_script() -> Path:
    script = Path(sys.executable).with_name("gearshift")
    if not script.exists():
        pytest.skip(f"the gearshift console script is not installed next to {sys.executable}")
    return script


@pytest.mark.parametrize(
    "args, code",
    [
        (["config", "validate", "{valid}"], 0),
        (["config", "validate", "{invalid}"], 2),
        (["config", "validate", "{missing}"], 2),
        (["catalog", "-o", "json"], 0),
        (["perf", "-m", "llama-3.1-8b", "-a", "L4", "-o", "json"], 0),
        (["perf", "-m", "llama-3.1-70b", "-a", "L4"], 0),
        (["perf", "-m", "no-such-model", "-a", "L4"], 2),
        (["perf", "-m", "llama-3.1-8b", "-a", "no-such-card"], 2),
    ],
)
def test_console_script_exit_codes(tmp_path: Path, args: list[str], code: int) -> None:
    files = {
        "valid": str(write(tmp_path, VALID, "valid.yaml")),
        "invalid": str(write(tmp_path, TWO_BAD_FIELDS, "invalid.yaml")),
        "missing": str(tmp_path / "missing.yaml"),
    }
    argv = [str(_console_script()), *(arg.format(**files) for arg in args)]
    completed = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert completed.returncode == code, completed.stderr
    if code == 2:
        assert completed.stderr.startswith("error: ")
