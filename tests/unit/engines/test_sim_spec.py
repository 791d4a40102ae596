"""What a sim engine may pretend to be: spec validation, resolution to the timing model, argv."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

import nodes.engines.sim
from nodes.engines.sim import SimEngineSpec, engine_command, step_time_model
from nodes.engines.sim.cli import build_parser
from nodes.models import catalog_model
from scheduler.errors import CatalogError, ConfigError


def spec(model: str = "llama-3.1-8b", **fields: Any) -> SimEngineSpec:
    defaults: dict[str, Any] = {
        "served_model_name": model,
        "architecture": catalog_model(model).architecture,
        "accelerator": "H100-SXM",
        "max_model_len": 8192,
    }
    return SimEngineSpec(**(defaults | fields))


def test_public_api() -> None:
    assert sorted(nodes.engines.sim.__all__) == [
        "SimEngineSpec", "create_app", "engine_command", "step_time_model",
    ]


def test_defaults_follow_vllm() -> None:
    default = spec()
    assert (default.dtype, default.tensor_parallel, default.max_num_seqs) == ("bfloat16", 1, 256)
    assert (default.gpu_memory_utilization, default.time_scale, default.seed) == (0.9, 1.0, 0)


def test_every_field_is_described() -> None:
    assert all(field.description for field in SimEngineSpec.model_fields.values())


@pytest.mark.parametrize(
    "fields",
    [
        {"max_model_len": 131073},  # beyond max_position_embeddings
        {"time_scale": 0},
        {"max_num_seqs": 0},
        {"gpu_memory_utilization": 1.5},
        {"max_tokens": 5},  # unknown key
    ],
    ids=["context-beyond-model", "time_scale-0", "max_num_seqs-0", "utilization", "unknown-key"],
)
def test_invalid_specs_are_rejected(fields: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError):
        spec(**fields)


def test_spec_is_frozen() -> None:
    with pytest.raises(pydantic.ValidationError):
        spec().time_scale = 2.0  # type: ignore[misc]


def test_resolves_to_the_performance_model() -> None:
    model = step_time_model(spec())
    assert model.kv_capacity_tokens >= 8192
    assert 0 < model.decode_step_seconds(1, 100) < model.decode_step_seconds(64, 100)
    assert 0 < model.prefill_seconds(100) < model.prefill_seconds(4000)


def test_slower_card_means_slower_steps() -> None:
    h100 = step_time_model(spec())
    l4 = step_time_model(spec(accelerator="L4"))
    assert l4.decode_step_seconds(1, 1000) > h100.decode_step_seconds(1, 1000)


def test_cpu_node_takes_its_size_from_the_spec() -> None:
    small = step_time_model(spec("qwen2.5-0.5b", accelerator="CPU", max_model_len=4096,
                                 cpu_cores=2, cpu_memory_gib=8.0))
    large = step_time_model(spec("qwen2.5-0.5b", accelerator="CPU", max_model_len=4096,
                                 cpu_cores=32, cpu_memory_gib=64.0))
    assert small.kv_capacity_tokens < large.kv_capacity_tokens
    assert small.decode_step_seconds(1, 100) > large.decode_step_seconds(1, 100)
    assert step_time_model(spec("qwen2.5-0.5b", accelerator="CPU", max_model_len=4096))


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"accelerator": "H100-SXM", "cpu_cores": 4}, ConfigError),  # cpu fields on a GPU
        ({"architecture": catalog_model("llama-3.1-70b").architecture, "accelerator": "L4"},
         ConfigError),  # does not fit
        ({"accelerator": "L4", "max_model_len": 131072}, ConfigError),  # KV below one sequence
        ({"accelerator": "T4"}, ConfigError),  # no bf16 on a T4
        ({"tensor_parallel": 3}, ConfigError),  # does not divide the heads
        ({"accelerator": "TPU-v9"}, CatalogError),
    ],
    ids=["cpu-fields-on-gpu", "too-big", "kv-too-small", "bf16-on-t4", "tp-3", "unknown-card"],
)
def test_replicas_vllm_would_refuse(fields: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        step_time_model(spec(**fields))


def test_engine_command_round_trips_through_the_parser() -> None:
    original = spec(time_scale=25.0, seed=7)
    argv = engine_command(original, host="127.0.0.1", port=8123, parent_pid=42, python="py")
    assert argv[:3] == ["py", "-m", "nodes.engines.sim"]
    args = build_parser().parse_args(argv[3:])
    assert SimEngineSpec.model_validate_json(args.spec_json) == original
    assert (args.host, args.port, args.parent_pid) == ("127.0.0.1", 8123, 42)
