"""`gearshift simulate`: a synthetic or CSV trace on the planned demo fleet, as JSON or tables;
--baselines, --plot, --duration on a CSV trace, classes from --mix, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from scheduler.cli import app
from scheduler.cli.plots import PNG_SIGNATURE
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


def _csv(path: Path, rows: list[str], *, header: str = "arrived_at,num_prefill_tokens,"
         "num_decode_tokens") -> Path:  # fmt: skip
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_baselines_report_cost_and_slo_for_every_run_as_json() -> None:
    result = runner.invoke(
        app,
        ["simulate", "--rate", "3", "--duration", "10", "--seed", "1", "--baselines", "-o",
         "json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["demand"]["source"] == "trace"  # the demo config has no workload
    assert {item["class"] for item in document["demand"]["workload"]} <= {
        "interactive", "standard", "batch"
    }  # fmt: skip
    assert document["cost_per_hour"] == document["fleet"]["cost_per_hour"]
    cost = document["cost_per_million_tokens"]
    assert cost is not None and cost == document["fleet"]["cost_per_million_slo_tokens"]
    names = [run["name"] for run in document["baselines"]]
    assert names[:3] == ["H100-SXM-only", "A100-80GB-only", "L4-only"]
    assert names[-2:] == ["class-agnostic", "round-robin"]
    for run in document["baselines"]:
        assert {"cost_per_hour", "cost_per_million_tokens", "slo_attainment", "plan",
                "feasible", "unmet", "ratio_vs_gearshift"} <= set(run)  # fmt: skip
        assert set(run["slo_attainment"]) == {"interactive", "standard", "batch"}
        if run["cost_per_million_tokens"] is not None:
            assert run["ratio_vs_gearshift"] == run["cost_per_million_tokens"] / cost
    round_robin = document["baselines"][-1]
    assert round_robin["cost_per_hour"] == document["cost_per_hour"]  # Gearshift's own plan


def test_baselines_table_compares_the_runs_and_names_the_demand(tmp_path: Path) -> None:
    png = tmp_path / "runs.png"
    result = runner.invoke(
        app, ["simulate", "--rate", "2", "--duration", "10", "--baselines", "--plot", str(png)]
    )
    assert result.exit_code == 0, result.output
    assert "Demand the planner sized the fleet for" in result.stdout
    assert "derived from the trace" in result.stdout
    assert "Gearshift against baselines" in result.stdout
    data = png.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 20_000


def test_plot_without_baselines_draws_the_gearshift_run(tmp_path: Path) -> None:
    png = tmp_path / "one.png"
    result = runner.invoke(app, ["simulate", "--rate", "2", "--duration", "5", "--plot", str(png),
                                 "-o", "json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "baselines" not in json.loads(result.stdout)
    assert png.read_bytes().startswith(PNG_SIGNATURE)


def test_duration_keeps_the_first_seconds_of_a_csv_trace(tmp_path: Path) -> None:
    trace = _csv(
        tmp_path / "t.csv",
        ["2.0,100,10,batch", "2.9,100,10,batch", "3.0,100,10,batch", "9.0,100,10,batch"],
        header="arrived_at,num_prefill_tokens,num_decode_tokens,traffic_class",
    )
    base = ["simulate", "--trace", str(trace), "-o", "json"]
    everything = json.loads(runner.invoke(app, base).stdout)
    first = json.loads(runner.invoke(app, [*base, "--duration", "1"]).stdout)
    assert everything["requests"] == 4
    assert first["requests"] == 2  # 2.0 and 2.9: within 1 s of the first arrival
    assert first["classes"]["batch"]["requests"] == 2


def test_a_csv_without_classes_draws_them_from_the_mix(tmp_path: Path) -> None:
    rows = [f"{i * 0.1:.1f},100,10" for i in range(40)]
    trace = _csv(tmp_path / "plain.csv", rows)
    result = runner.invoke(
        app, ["simulate", "--trace", str(trace), "--mix", "interactive=1,batch=1", "-o", "json"]
    )
    assert result.exit_code == 0, result.output
    requests = {name: c["requests"] for name, c in json.loads(result.stdout)["classes"].items()}
    assert requests["standard"] == 0
    assert requests["interactive"] > 5 and requests["batch"] > 5
    assert requests["interactive"] + requests["batch"] == 40


def test_the_config_workload_is_the_planners_demand(tmp_path: Path) -> None:
    config = tmp_path / "fleet.yaml"
    config.write_text(
        "fleet:\n  node_groups:\n    - {name: l4, accelerator: L4, nodes: 2}\n"
        "models:\n  - {name: qwen2.5-0.5b, max_context: 4096}\n"
        "workload:\n  - {model: qwen2.5-0.5b, class: standard, rate_per_s: 3}\n"
    )
    result = runner.invoke(app, ["simulate", "-c", str(config), "--duration", "5", "-o", "json"])
    assert result.exit_code == 0, result.output
    demand = json.loads(result.stdout)["demand"]
    assert demand["source"] == "config"
    assert demand["workload"] == [
        {"model": "qwen2.5-0.5b", "class": "standard", "rate_per_s": 3.0, "prompt_tokens": 512,
         "output_tokens": 128}
    ]  # fmt: skip


def test_bad_plot_or_trace_is_one_line_and_exit_2(tmp_path: Path) -> None:
    empty = _csv(tmp_path / "empty.csv", [])
    for args, message in (
        (["--plot", str(tmp_path / "chart.txt")], "--plot writes a PNG"),
        (["--plot", str(tmp_path / "absent" / "chart.png")], "does not exist"),
        (["--trace", str(empty)], "has no request to replay"),
        (["--baselines", "--mix", "batch=0"], "--mix needs at least one class"),
    ):
        result = runner.invoke(app, ["simulate", *args])
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output
        assert len(result.output.strip().splitlines()) == 1, result.output
