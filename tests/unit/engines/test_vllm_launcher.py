"""The vLLM command line and environment, for GPU replicas at TP 1/2/4, quantized weights and
the CPU build: what Gearshift asks of vLLM is pinned here."""

from __future__ import annotations

import pytest

from nodes.engines.launch import EngineSpec, engine_command
from nodes.engines.vllm import ENTRYPOINT, VllmLaunch, vllm_argv, vllm_env
from nodes.models import Dtype, catalog_model
from scheduler.errors import ConfigError
from scheduler.types import EngineKind, KvCacheDtype


def _launch(**overrides: object) -> VllmLaunch:
    fields: dict[str, object] = {
        "weights": "/models/llama-3.1-8b",
        "served_model_name": "llama-3.1-8b",
        "dtype": Dtype.BF16,
        "tensor_parallel": 1,
        "max_model_len": 8192,
        "max_num_seqs": 256,
        "on_cpu": False,
        "gpu_memory_utilization": 0.9,
    }
    fields.update(overrides)
    return VllmLaunch(**fields)  # type: ignore[arg-type]


def _flags(argv: list[str]) -> dict[str, str | None]:
    """``--flag value`` pairs (``None`` for bare switches) after the entry point."""
    flags: dict[str, str | None] = {}
    rest = argv[3:]
    index = 0
    while index < len(rest):
        flag = rest[index]
        has_value = index + 1 < len(rest) and not rest[index + 1].startswith("--")
        flags[flag] = rest[index + 1] if has_value else None
        index += 2 if has_value else 1
    return flags


@pytest.mark.parametrize("tp", [1, 2, 4])
def test_gpu_argv_carries_placement(tp: int) -> None:
    argv = vllm_argv(_launch(tensor_parallel=tp), "10.0.0.7", 8123, python="/venv/bin/python")
    assert argv[:3] == ["/venv/bin/python", "-m", ENTRYPOINT]
    assert _flags(argv) == {
        "--model": "/models/llama-3.1-8b",
        "--served-model-name": "llama-3.1-8b",
        "--host": "10.0.0.7",
        "--port": "8123",
        "--max-model-len": "8192",
        "--max-num-seqs": "256",
        "--scheduling-policy": "priority",
        "--tensor-parallel-size": str(tp),
        "--gpu-memory-utilization": "0.9",
        "--dtype": "bfloat16",
    }


@pytest.mark.parametrize("tp", [1, 2, 4])
def test_gpu_env_shows_exactly_the_gpus_ray_assigned(tp: int) -> None:
    gpus = [3, 5, 6, 7][:tp]
    env = vllm_env(_launch(tensor_parallel=tp), gpus)
    assert env["CUDA_VISIBLE_DEVICES"] == ",".join(map(str, gpus))
    assert "VLLM_CPU_KVCACHE_SPACE" not in env


def test_gpu_env_refuses_a_gpu_count_that_does_not_match_tp() -> None:
    with pytest.raises(ConfigError, match="assigned 1 GPUs but the replica needs 2"):
        vllm_env(_launch(tensor_parallel=2), [0])


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [
        (Dtype.FP8, ("--quantization", "fp8")),
        (Dtype.AWQ, ("--quantization", "awq")),
        (Dtype.GPTQ, ("--quantization", "gptq")),
        (Dtype.FP16, ("--dtype", "float16")),
        (Dtype.INT8, ("--dtype", "auto")),
    ],
)
def test_weight_formats(dtype: Dtype, expected: tuple[str, str]) -> None:
    flags = _flags(vllm_argv(_launch(dtype=dtype), "127.0.0.1", 1))
    assert flags[expected[0]] == expected[1]
    other = "--dtype" if expected[0] == "--quantization" else "--quantization"
    assert other not in flags


def test_an_fp8_kv_cache_is_asked_for_and_cannot_be_overridden() -> None:
    assert "--kv-cache-dtype" not in _flags(vllm_argv(_launch(), "127.0.0.1", 1))
    fp8 = _flags(vllm_argv(_launch(kv_cache_dtype=KvCacheDtype.FP8), "127.0.0.1", 1))
    assert fp8["--kv-cache-dtype"] == "fp8"
    with pytest.raises(ConfigError, match="--kv-cache-dtype"):
        vllm_argv(_launch(extra_args=("--kv-cache-dtype=fp8",)), "127.0.0.1", 1)


def test_cpu_build_argv_and_env() -> None:
    launch = _launch(on_cpu=True, cpu_kv_cache_gib=2, cpu_threads=8, enforce_eager=True)
    flags = _flags(vllm_argv(launch, "127.0.0.1", 9000))
    assert "--gpu-memory-utilization" not in flags  # the CPU build sizes KV from the env
    assert flags["--enforce-eager"] is None
    assert flags["--tensor-parallel-size"] == "1"
    env = vllm_env(launch, [])
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "2"
    assert env["OMP_NUM_THREADS"] == "8"  # Ray gives workers OMP_NUM_THREADS=1 otherwise
    assert env["CUDA_VISIBLE_DEVICES"] == ""


def test_cpu_build_refuses_tensor_parallel() -> None:
    with pytest.raises(ConfigError, match="tensor_parallel 1"):
        vllm_argv(_launch(on_cpu=True, tensor_parallel=2), "127.0.0.1", 1)


def test_extra_args_pass_through_but_cannot_override_placement() -> None:
    argv = vllm_argv(_launch(extra_args=("--enable-chunked-prefill", "--seed", "7")), "h", 1)
    assert argv[-3:] == ["--enable-chunked-prefill", "--seed", "7"]
    for clash in (("--tensor-parallel-size", "8"), ("--port=1",), ("-tp", "2")):
        with pytest.raises(ConfigError, match="may not set"):
            vllm_argv(_launch(extra_args=clash), "h", 1)


def test_operator_env_is_kept() -> None:
    env = vllm_env(_launch(env={"HF_HUB_OFFLINE": "1"}), [0])
    assert env["HF_HUB_OFFLINE"] == "1"


def test_engine_command_runs_vllm_in_its_own_process_group() -> None:
    spec = EngineSpec(
        kind=EngineKind.VLLM,
        served_model_name="llama-3.1-8b",
        architecture=catalog_model("llama-3.1-8b").architecture,
        dtype=Dtype.BF16,
        accelerator="H100-SXM",
        tensor_parallel=2,
        gpu_memory_utilization=0.9,
        max_num_seqs=256,
        max_model_len=8192,
        vllm=_launch(tensor_parallel=2),
    )
    command = engine_command(spec, "127.0.0.1", 8000, parent_pid=1, gpu_ids=[0, 1])
    assert command.process_group
    assert command.env["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert ENTRYPOINT in command.argv


def test_engine_command_without_weights_is_a_config_error() -> None:
    spec = EngineSpec(
        kind=EngineKind.VLLM,
        served_model_name="m",
        architecture=catalog_model("qwen2.5-0.5b").architecture,
        dtype=Dtype.BF16,
        accelerator="L4",
        tensor_parallel=1,
        gpu_memory_utilization=0.9,
        max_num_seqs=8,
        max_model_len=1024,
    )
    with pytest.raises(ConfigError, match="needs its weights"):
        engine_command(spec, "127.0.0.1", 8000, parent_pid=1)
