"""What one sim engine pretends to be (``SimEngineSpec``) and the performance model that times it.

The spec is the whole configuration of an engine process: the replica actor serialises it to JSON
and passes it on the command line (see ``nodes.engines.sim.cli``). ``step_time_model`` resolves
it against the accelerator catalog and the performance model, refusing what vLLM would refuse at
start-up: a model that does not fit, a KV cache that cannot hold one ``max_model_len`` sequence,
bf16 on a card without bf16.
"""

from __future__ import annotations

from typing import Self

import pydantic
from pydantic import ConfigDict, Field

from nodes.accelerators import AcceleratorKind, AcceleratorSpec, accelerator, cpu_accelerator
from nodes.engines.sim.batcher import MAX_NUM_BATCHED_TOKENS, StepTimeModel
from nodes.models import Dtype, ModelArchitecture
from nodes.performance import replica_performance
from scheduler.errors import ConfigError
from scheduler.types import KvCacheDtype

CPU = "CPU"


class SimEngineSpec(pydantic.BaseModel):
    """One simulated vLLM replica: the model it serves, the hardware it imitates, its limits."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    served_model_name: str = Field(
        min_length=1,
        description="Name clients send as `model` and the `model_name` label on metrics.",
    )
    architecture: ModelArchitecture = Field(
        description="Shapes of the served model; they set weight size, KV size and step times."
    )
    dtype: Dtype = Field(default=Dtype.BF16, description="Weight dtype or quantization.")
    accelerator: str = Field(
        min_length=1,
        description="Accelerator catalog name (e.g. `H100-SXM`, `L4`), or `CPU` for a CPU node.",
    )
    cpu_cores: int | None = Field(
        default=None,
        gt=0,
        description="vCPUs of the CPU node (accelerator `CPU` only; default: the catalog's CPU).",
    )
    cpu_memory_gib: float | None = Field(
        default=None,
        gt=0,
        description="Host memory the engine may use, GiB (accelerator `CPU` only; default: the "
        "catalog's CPU).",
    )
    cpu_memory_bandwidth_gbps: float | None = Field(
        default=None,
        gt=0,
        description="Measured memory bandwidth, GB/s (accelerator `CPU` only; default: estimated "
        "from the core count).",
    )
    tensor_parallel: int = Field(default=1, ge=1, description="Devices the replica spans.")
    kv_cache_dtype: KvCacheDtype = Field(
        default=KvCacheDtype.AUTO, description="KV cache storage: auto (16-bit) or fp8."
    )
    gpu_memory_utilization: float = Field(
        default=0.9,
        gt=0,
        le=1,
        description="Fraction of each device's memory the replica may use, as vLLM's flag.",
    )
    max_num_seqs: int = Field(default=256, ge=1, description="Most requests running at once.")
    max_model_len: int = Field(
        ge=2,
        description="Longest prompt + output a request may have; at most the architecture's "
        "max_position_embeddings.",
    )
    time_scale: float = Field(
        default=1.0,
        gt=0,
        description="Speed-up of simulated time: a step the model says takes t seconds sleeps "
        "t / time_scale.",
    )
    seed: int = Field(default=0, description="Seed of the generated text and reply lengths.")

    @pydantic.model_validator(mode="after")
    def _context_within_model(self) -> Self:
        limit = self.architecture.max_position_embeddings
        if self.max_model_len > limit:
            raise ValueError(
                f"max_model_len ({self.max_model_len}) exceeds the model's "
                f"max_position_embeddings ({limit})"
            )
        return self


def step_time_model(spec: SimEngineSpec) -> StepTimeModel:
    """The performance model of the replica ``spec`` describes.

    Raises ``CatalogError`` for an unknown accelerator and ``ConfigError`` when vLLM would refuse
    to start the replica.
    """
    device = _accelerator(spec)
    if spec.dtype is Dtype.BF16 and not device.supports_bf16:
        raise ConfigError(f"{device.name} does not support bfloat16; serve the model in float16.")
    try:
        performance = replica_performance(
            spec.architecture,
            spec.dtype,
            device,
            tensor_parallel=spec.tensor_parallel,
            gpu_memory_utilization=spec.gpu_memory_utilization,
            kv_dtype_bytes=spec.kv_cache_dtype.bytes_per_element,
        )
    except ValueError as exc:
        raise ConfigError(f"cannot model this replica: {exc}") from exc
    if not performance.fits:
        raise ConfigError(
            f"{spec.served_model_name} does not fit on {spec.tensor_parallel} x {device.name} at "
            f"gpu_memory_utilization {spec.gpu_memory_utilization}: the weights take "
            f"{performance.weights_gib_per_device:.1f} GiB per device and leave no KV cache."
        )
    if performance.kv_capacity_tokens < spec.max_model_len:
        raise ConfigError(
            f"The model's max seq len ({spec.max_model_len}) is larger than the maximum number of "
            f"tokens that can be stored in KV cache ({performance.kv_capacity_tokens}) on "
            f"{spec.tensor_parallel} x {device.name}. Lower max_model_len or raise "
            f"gpu_memory_utilization."
        )
    return performance


LARGE_CARD_BATCHED_TOKENS = 8192
"""vLLM's budget on GPUs of at least ``LARGE_CARD_MEMORY_GIB`` other than the A100."""
LARGE_CARD_MEMORY_GIB = 70.0


def engine_token_budget(device: AcceleratorSpec) -> int:
    """vLLM's default ``max_num_batched_tokens`` for its OpenAI server on ``device``:
    8,192 on GPUs of at least 70 GiB other than the A100 (whose throughput a larger budget
    lowered, vLLM PR #17885), 2,048 elsewhere [V vLLM ``EngineArgs.get_batch_defaults``]. The
    simulator's ``scheduler.simulator.step_times.engine_token_budget`` is the same rule."""
    large = (
        device.kind is AcceleratorKind.GPU
        and device.memory_gib >= LARGE_CARD_MEMORY_GIB
        and "a100" not in device.name.lower()
    )
    return LARGE_CARD_BATCHED_TOKENS if large else MAX_NUM_BATCHED_TOKENS


def token_budget(spec: SimEngineSpec) -> int:
    """The ``max_num_batched_tokens`` vLLM would default to on the card ``spec`` imitates
    (``engine_token_budget``); ``CatalogError`` for an unknown accelerator."""
    return engine_token_budget(_accelerator(spec))


def _accelerator(spec: SimEngineSpec) -> AcceleratorSpec:
    device = accelerator(spec.accelerator)
    cpu_fields = (spec.cpu_cores, spec.cpu_memory_gib, spec.cpu_memory_bandwidth_gbps)
    if device.kind is not AcceleratorKind.CPU:
        if any(value is not None for value in cpu_fields):
            raise ConfigError(
                f"cpu_cores, cpu_memory_gib and cpu_memory_bandwidth_gbps apply only to the "
                f"{CPU} accelerator, not {device.name}."
            )
        return device
    if all(value is None for value in cpu_fields):
        return device
    return cpu_accelerator(
        cores=spec.cpu_cores or device.cores or 1,
        memory_gib=spec.cpu_memory_gib or device.memory_gib,
        memory_bandwidth_gbps=spec.cpu_memory_bandwidth_gbps,
    )
