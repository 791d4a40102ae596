"""``gearshift catalog``: every accelerator and model, stable keys, the catalog's own figures."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from nodes.accelerators import ACCELERATORS
from nodes.models import MODELS
from scheduler.cli import app

GPU_TYPES = {
    "A100-40GB",
    "A100-80GB",
    "H100-SXM",
    "H100-PCIe",
    "H200",
    "B200",
    "L40S",
    "L4",
    "A10G",
    "T4",
    "V100",
    "RTX-4090",
    "MI300X",
}
REQUIRED_MODELS = {"llama-2-7b", "llama-3.1-8b", "llama-3.1-70b", "qwen2.5-0.5b", "mistral-7b"}
ACCELERATOR_KEYS = {
    "type",
    "name",
    "kind",
    "vendor",
    "memory_gib",
    "memory_bandwidth_gbps",
    "bf16_tflops",
    "fp8_tflops",
    "price_per_hour",
    "price_source",
    "ray_type",
    "interconnect",
    "supports_bf16",
    "calibrated",
    "cores",
    "aliases",
}
MODEL_KEYS = {
    "type",
    "name",
    "hf_id",
    "num_parameters",
    "params_billions",
    "num_layers",
    "hidden_size",
    "num_attention_heads",
    "num_kv_heads",
    "head_dim",
    "max_context",
    "default_dtype",
    "bf16_weights_gib",
    "kv_kib_per_token",
}


def catalog_json(*args: str) -> list[dict[str, Any]]:
    result = CliRunner().invoke(app, ["catalog", *args, "-o", "json"])
    assert result.exit_code == 0, result.stderr
    rows: list[dict[str, Any]] = json.loads(result.stdout)
    return rows


def test_all_lists_every_gpu_type_cpu_and_model_with_stable_keys() -> None:
    rows = catalog_json()
    accelerators = {row["name"]: row for row in rows if row["type"] == "accelerator"}
    models = {row["name"]: row for row in rows if row["type"] == "model"}
    assert len(rows) == len(accelerators) + len(models)
    assert set(accelerators) == GPU_TYPES | {"CPU"} == set(ACCELERATORS)
    assert {n for n, row in accelerators.items() if row["kind"] == "gpu"} == GPU_TYPES
    assert set(models) == set(MODELS)
    assert set(models) >= REQUIRED_MODELS
    assert all(set(row) == ACCELERATOR_KEYS for row in accelerators.values())
    assert all(set(row) == MODEL_KEYS for row in models.values())


@pytest.mark.parametrize("kind, expected", [("accelerators", "accelerator"), ("models", "model")])
def test_kind_selects_one_half(kind: str, expected: str) -> None:
    rows = catalog_json(kind)
    assert rows
    assert {row["type"] for row in rows} == {expected}


def test_accelerator_rows_carry_the_catalog_figures() -> None:
    for row in catalog_json("accelerators"):
        spec = ACCELERATORS[row["name"]]
        assert row["memory_gib"] == spec.memory_gib
        assert row["memory_bandwidth_gbps"] == spec.memory_bandwidth_gbps
        assert row["bf16_tflops"] == spec.bf16_tflops
        assert row["price_per_hour"] == spec.default_price_per_hour
        assert row["price_source"] == spec.price_source
        assert row["ray_type"] == spec.ray_type
        assert row["calibrated"] == spec.calibrated


def test_model_rows_carry_sizes_derived_from_the_architecture() -> None:
    for row in catalog_json("models"):
        model = MODELS[row["name"]]
        arch = model.architecture
        assert row["hf_id"] == model.hf_id
        assert row["num_kv_heads"] == arch.num_kv_heads
        assert row["max_context"] == arch.max_position_embeddings
        assert row["bf16_weights_gib"] == pytest.approx(arch.num_parameters * 2 / 2**30)
        assert row["kv_kib_per_token"] == pytest.approx(arch.kv_bytes_per_token(2.0) / 1024)


def test_yaml_matches_json() -> None:
    result = CliRunner().invoke(app, ["catalog", "-o", "yaml"])
    assert result.exit_code == 0
    assert yaml.safe_load(result.stdout) == catalog_json()


def test_table_shows_both_catalogs() -> None:
    result = CliRunner().invoke(app, ["catalog"])
    assert result.exit_code == 0
    assert "Accelerators" in result.stdout
    assert "Models" in result.stdout
    assert "L40S" in result.stdout


def test_unknown_kind_is_a_usage_error() -> None:
    assert CliRunner().invoke(app, ["catalog", "gpus"]).exit_code == 2
