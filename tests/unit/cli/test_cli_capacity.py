"""`gearshift capacity`: the capacity table of a config, as JSON, YAML or a table."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from scheduler.cli import app
from scheduler.config import demo_config
from scheduler.placement.capacity import capacity_rows

runner = CliRunner()


def test_the_demo_table_has_a_row_per_model_group_tp_and_class() -> None:
    result = runner.invoke(app, ["capacity", "-o", "json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    expected = capacity_rows(demo_config())
    assert len(rows) == len(expected) == 12  # (llama on h100, a100; qwen on l4, cpu) x 3 classes
    assert {(r["model"], r["node_group"]) for r in rows} == {
        ("llama-3.1-8b", "h100"),
        ("llama-3.1-8b", "a100"),
        ("qwen2.5-0.5b", "l4"),
        ("qwen2.5-0.5b", "cpu"),
    }
    for row, want in zip(rows, expected, strict=True):
        assert row["max_rate_per_s"] == want.point.rate_per_s
        assert row["output_tokens_per_s"] == want.point.rate_per_s * row["output_tokens"]
        assert (row["prompt_tokens"], row["output_tokens"]) == (512, 128)
        assert (row["reason"] is None) == (row["max_rate_per_s"] > 0)
    cpu_interactive = next(
        r for r in rows if (r["node_group"], r["class"]) == ("cpu", "interactive")
    )
    assert cpu_interactive["reason"] == "even alone, TTFT 689 ms, above the 500 ms target"


def test_model_filter_and_workload_sizes(tmp_path: Path) -> None:
    config = tmp_path / "fleet.yaml"
    config.write_text(
        """
fleet:
  node_groups:
    - {name: l4, accelerator: L4, nodes: 1}
models:
  - {name: qwen2.5-0.5b}
  - {name: qwen2.5-1.5b}
workload:
  - {model: qwen2.5-0.5b, class: batch, rate_per_s: 1, prompt_tokens: 1000, output_tokens: 90}
"""
    )
    result = runner.invoke(
        app, ["capacity", "--config", str(config), "--model", "qwen2.5-0.5b", "-o", "yaml"]
    )
    assert result.exit_code == 0, result.output
    rows = yaml.safe_load(result.stdout)
    assert {r["model"] for r in rows} == {"qwen2.5-0.5b"}
    buckets = {r["class"]: (r["prompt_tokens"], r["output_tokens"]) for r in rows}
    assert buckets == {"interactive": (512, 128), "standard": (512, 128), "batch": (1000, 90)}


def test_table_output_explains_zero_rates() -> None:
    result = runner.invoke(app, ["capacity", "--model", "qwen2.5-0.5b"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "Capacity of one replica" in result.stdout
    assert "(1) even alone, TTFT 689 ms, above the 500 ms target" in result.stdout


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("models: [{name: nope-model}]\n")
    for args, message in (
        (["--model", "nope"], "model `nope` is not in the config"),
        (["--config", str(tmp_path / "absent.yaml")], "absent.yaml"),
        (["--config", str(broken)], "nope-model"),
    ):
        result = runner.invoke(app, ["capacity", *args])
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output
