"""`gearshift plan`: the configured solver's placement for a workload, without starting it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from scheduler.cli import app
from scheduler.cli.plan_cmd import workload_from_file
from scheduler.config import demo_config

runner = CliRunner()

def test_demo_plan_as_json() -> None:
    result = runner.invoke(app, ["plan", "-o", "json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["cost_per_hour"] == pytest.approx(
        sum(a["price_per_hour"] for a in document["assignments"])
    )
    assert sum(r["count"] for r in document["replicas"]) == sum(
        m.replicas for m in demo_config().models
    )
    assert {r["node_group"] for r in document["replicas"] if r["interruptible"]} <= {"l4"}
    assert set(document["classes"]) == {"interactive", "standard", "batch"}

def test_the_table_names_the_solver_and_the_cost() -> None:
    result = runner.invoke(app, ["plan"])
    assert result.exit_code == 0, result.output
    assert "Plan (" in result.stdout and "/h" in result.stdout

def test_a_workload_file_reaches_the_planner(tmp_path: Path) -> None:
    workload = tmp_path / "workload.yaml"
    workload.write_text(
        "workload:\n"
        "  - {model: qwen2.5-0.5b, class: interactive, rate_per_s: 2, prompt_tokens: 200}\n"
    )
    result = runner.invoke(app, ["plan", "--workload", str(workload), "-o", "json"])
    assert result.exit_code == 0, result.output

def test_a_trace_is_measured_into_a_workload(tmp_path: Path) -> None:

    trace = tmp_path / "trace.csv"
    trace.write_text(
        "arrived_at,num_prefill_tokens,num_decode_tokens,traffic_class\n"
        "0,100,10,interactive\n1,300,30,interactive\n2,1000,500,batch\n"
    )
    items = workload_from_file(trace, demo_config(), "qwen2.5-0.5b")
    assert [
        (i.model, i.traffic_class.value, i.rate_per_s, i.prompt_tokens, i.output_tokens)
        for i in items
    ] == [
        ("qwen2.5-0.5b", "interactive", 1.0, 200, 20),
        ("qwen2.5-0.5b", "batch", 0.5, 1000, 500),
    ]

@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- {model: nope, class: batch, rate_per_s: 1}\n", "nope"),
        ("- {model: qwen2.5-0.5b, class: urgent, rate_per_s: 1}\n", "class"),
        ("- {model: qwen2.5-0.5b, class: batch, rate_per_s: -1}\n", "rate_per_s"),
        ("just words\n", "expected a list"),
        ("[unclosed\n", "not valid YAML"),
    ],
)
def test_bad_workload_is_one_line_and_exit_2(tmp_path: Path, text: str, message: str) -> None:
    workload = tmp_path / "workload.yaml"
    workload.write_text(text)
    result = runner.invoke(app, ["plan", "--workload", str(workload)])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output

def test_missing_workload_file_is_exit_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["plan", "--workload", str(tmp_path / "absent.yaml")])
    assert result.exit_code == 2 and "cannot read" in result.output
