"""``gearshift perf``: the performance model's own figures; misfits print; bad names exit 2."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner, Result

from nodes.accelerators import accelerator
from nodes.calibration import calibration_table
from nodes.models import Dtype, architecture_from_hf_config, catalog_model
from nodes.performance import ReplicaPerformance, replica_performance
from scheduler.cli import app

LLAMA_1B_HF_CONFIG = {
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
    return CliRunner().invoke(app, ["perf", *args])


def perf_json(*args: str) -> dict[str, Any]:
    result = invoke(*args, "-o", "json")
    assert result.exit_code == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def calibration_json() -> list[dict[str, Any]]:
    result = invoke("--calibration", "-o", "json")
    assert result.exit_code == 0, result.stderr
    rows: list[dict[str, Any]] = json.loads(result.stdout)
    return rows


def assert_matches_model(
    report: dict[str, Any], replica: ReplicaPerformance, batch: int, context: int, prompt: int
) -> None:
    step = replica.decode_step_seconds(batch, context)
    assert report["fits"] is replica.fits
    assert report["prefill_ms"] == pytest.approx(replica.prefill_seconds(prompt) * 1e3)
    assert report["decode_step_ms"] == pytest.approx(step * 1e3)
    assert report["tokens_per_s_per_sequence"] == pytest.approx(1 / step)
    assert report["tokens_per_s_total"] == pytest.approx(
        replica.decode_tokens_per_second(batch, context)
    )
    assert report["kv_capacity_tokens"] == replica.kv_capacity_tokens
    assert report["kv_capacity_sequences"] == replica.max_batch(context, max_num_seqs=10**12)
    assert report["weights_gib_per_device"] == pytest.approx(replica.weights_gib_per_device)


@pytest.mark.parametrize(
    "model, card, tp, batch, context, prompt",
    [
        ("llama-3.1-8b", "L4", 1, 16, 2048, 512),
        ("llama-3.1-8b", "H100-SXM", 1, 1, 1024, 1024),
        ("llama-3.1-70b", "H100-SXM", 4, 64, 4096, 2048),
        ("qwen2.5-0.5b", "CPU", 1, 4, 512, 256),
    ],
)
def test_figures_are_the_performance_models(
    model: str, card: str, tp: int, batch: int, context: int, prompt: int
) -> None:
    report = perf_json(
        "-m",
        model,
        "-a",
        card,
        "--tp",
        str(tp),
        "--batch",
        str(batch),
        "--context",
        str(context),
        "--prompt",
        str(prompt),
    )
    entry = catalog_model(model)
    replica = replica_performance(entry.architecture, entry.default_dtype, accelerator(card), tp)
    assert report["fits"] is True
    assert report["model"] == entry.name
    assert report["accelerator"] == card
    assert report["tensor_parallel"] == tp
    assert_matches_model(report, replica, batch, context, prompt)


def test_names_are_resolved_like_the_catalog_does() -> None:
    report = perf_json("-m", "meta-llama/Llama-3.1-8B-Instruct", "-a", "h100")
    assert report["model"] == "llama-3.1-8b"
    assert report["accelerator"] == "H100-SXM"


def test_dtype_and_memory_utilization_options_reach_the_model() -> None:
    report = perf_json(
        "-m", "llama-3.1-8b", "-a", "L40S", "--dtype", "fp8", "--gpu-memory-utilization", "0.8"
    )
    arch = catalog_model("llama-3.1-8b").architecture
    replica = replica_performance(arch, Dtype.FP8, accelerator("L40S"), 1, 0.8)
    assert report["dtype"] == "fp8"
    assert_matches_model(report, replica, 1, 1024, 1024)


def test_a_card_without_bf16_defaults_to_float16_and_says_so() -> None:
    report = perf_json("-m", "llama-3.2-1b", "-a", "T4")
    assert report["dtype"] == "float16"
    assert any("float16" in note for note in report["notes"])


def test_a_layout_that_does_not_fit_still_prints_and_exits_0() -> None:
    report = perf_json("-m", "llama-3.1-70b", "-a", "L4")
    arch = catalog_model("llama-3.1-70b").architecture
    replica = replica_performance(arch, Dtype.BF16, accelerator("L4"))
    assert report["fits"] is False
    assert "weights" in report["reason"]
    assert report["kv_capacity_sequences"] == 0
    assert_matches_model(report, replica, 1, 1024, 1024)
    table = invoke("-m", "llama-3.1-70b", "-a", "L4")
    assert table.exit_code == 0
    assert "does not fit" in table.stdout.lower()


def test_a_misfit_suggests_the_tensor_parallel_degree_that_fits() -> None:
    report = perf_json("-m", "llama-3.1-70b", "-a", "H100-SXM")
    assert report["fits"] is False
    assert report["reason"].endswith("try --tp 2")
    assert perf_json("-m", "llama-3.1-70b", "-a", "H100-SXM", "--tp", "2")["fits"] is True


def test_a_batch_larger_than_the_kv_cache_is_noted() -> None:
    report = perf_json("-m", "llama-3.1-8b", "-a", "L4", "--batch", "64", "--context", "4096")
    assert report["fits"] is True
    assert report["kv_capacity_sequences"] < 64
    assert any("--batch 64" in note for note in report["notes"])


def test_hf_config_replaces_the_catalog(tmp_path: Path) -> None:
    hf = tmp_path / "config.json"
    hf.write_text(json.dumps(LLAMA_1B_HF_CONFIG), encoding="utf-8")
    report = perf_json("--hf-config", str(hf), "-a", "L4", "--batch", "8")
    replica = replica_performance(architecture_from_hf_config(hf), Dtype.BF16, accelerator("L4"))
    assert report["model"] == str(hf)
    assert report["hf_id"] is None
    assert_matches_model(report, replica, 8, 1024, 1024)


@pytest.mark.parametrize(
    "args, expected",
    [
        (["-m", "llama-3.1-8", "-a", "L4"], "llama-3.1-8b"),
        (["-m", "llama-3.1-8b", "-a", "H10"], "H100-SXM"),
        (["-m", "qwen2.5-0.5b", "-a", "L4", "--tp", "4"], "14 attention heads"),
        (["-m", "llama-3.1-8b"], "--accelerator"),
        (["-a", "L4"], "--model"),
        (["-m", "llama-3.1-8b", "--hf-config", "x.json", "-a", "L4"], "--hf-config"),
        (["--hf-config", "/nonexistent/config.json", "-a", "L4"], "/nonexistent/config.json"),
    ],
)
def test_bad_input_is_one_line_with_suggestions_and_exit_2(args: list[str], expected: str) -> None:
    result = invoke(*args)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert expected in result.stderr


def test_calibration_lists_every_point_with_the_models_prediction() -> None:
    rows = calibration_json()
    table = calibration_table()
    assert len(rows) == len(table)
    for row, expected in zip(rows, table, strict=True):
        assert row["model"] == expected.point.model
        assert row["accelerator"] == expected.point.accelerator
        assert row["metric"] == expected.point.metric
        assert row["published"] == expected.point.published
        assert row["predicted"] == pytest.approx(expected.predicted)
        assert row["ratio"] == pytest.approx(expected.ratio)
        assert row["within_tolerance"] is expected.within_tolerance
        assert row["outlier"] is expected.point.outlier


def test_calibration_table_and_yaml() -> None:
    table = invoke("--calibration")
    assert table.exit_code == 0
    assert "published" in table.stdout
    as_yaml = invoke("--calibration", "-o", "yaml")
    assert as_yaml.exit_code == 0
    assert yaml.safe_load(as_yaml.stdout) == calibration_json()
