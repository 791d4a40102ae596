"""`gearshift simulate`: a synthetic or CSV trace on the planned demo fleet, as JSON or tables."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from scheduler.cli import app
from scheduler.config import demo_config

runner = CliRunner()


def test_synthetic_run_reports_every_class_and_the_fleet() -> None:
    result = runner.invoke(
        app, ["simulate", "--rate", "4", "--duration", "20", "--seed", "3", "-o", "json"]
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert set(document["classes"]) == {"interactive", "standard", "batch"}
    total = sum(c["requests"] for c in document["classes"].values())
    assert total == document["requests"] > 0
    for report in document["classes"].values():
        assert report["completed"] + report["rejected"] == report["requests"]
        assert 0.0 <= report["slo_attainment"] <= 1.0
    fleet = document["fleet"]
    assert fleet["cost_per_hour"] == sum(r["price_per_hour"] for r in document["plan"])
    demo = demo_config()
    assert len(document["plan"]) == sum(model.replicas for model in demo.models)
    again = runner.invoke(
        app, ["simulate", "--rate", "4", "--duration", "20", "--seed", "3", "-o", "json"]
    )
    assert json.loads(again.stdout) == document  # seeded: the same run twice


def test_csv_trace_with_classes(tmp_path: Path) -> None:
    trace = tmp_path / "trace.csv"
    trace.write_text(
        "arrived_at,num_prefill_tokens,num_decode_tokens,traffic_class\n"
        "0.0,100,10,interactive\n0.5,2000,50,batch\n1.0,300,20,standard\n"
    )
    result = runner.invoke(
        app, ["simulate", "--trace", str(trace), "--model", "qwen2.5-0.5b", "-o", "json"]
    )
    assert result.exit_code == 0, result.output
    classes = json.loads(result.stdout)["classes"]
    assert {name: c["requests"] for name, c in classes.items()} == {
        "interactive": 1,
        "standard": 1,
        "batch": 1,
    }


def test_table_output_names_the_cost() -> None:
    result = runner.invoke(app, ["simulate", "--rate", "2", "--duration", "10"])
    assert result.exit_code == 0, result.output
    # Rich fits the table to 80 columns here, so long cells may be cut; the title is not.
    assert "per 1M tokens within SLO" in result.stdout
    assert "Utilization" in result.stdout


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path) -> None:
    for args, message in (
        (["--mix", "gold=1"], "bad --mix item"),
        (["--model", "nope"], "model `nope` is not in the config"),
        (["--trace", str(tmp_path / "absent.csv")], "absent.csv"),
    ):
        result = runner.invoke(app, ["simulate", *args])
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output
