"""A roofline performance model of one vLLM replica: memory fit, KV capacity, prefill, decode.

Decode is bound by reading the weights and the KV cache from memory, prefill by matrix-multiply
FLOP/s; each is scaled by an efficiency constant measured on real kernels and padded with fixed
per-pass and per-sequence overheads. ``docs/performance-model.md`` states every formula and the
source of every constant; ``nodes.calibration`` checks the result against published vLLM
measurements.

Everything here is pure: no I/O, no clock, no global state.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from nodes.accelerators import AcceleratorKind, AcceleratorSpec
from nodes.models import Dtype, ModelArchitecture, bytes_per_param

GIB = float(2**30)


@dataclass(frozen=True, slots=True)
class EfficiencyConstants:
    """How far below its datasheet roofline a replica runs, and what each pass costs on top.

    ``step_overhead_per_seq_s`` (an addition to the five core fields, defaulting to 0) is CPU-side
    work per sequence per decode step. All values are fractions in (0, 1] or seconds >= 0.
    """

    bandwidth_efficiency: float
    compute_efficiency: float
    step_overhead_s: float
    prefill_overhead_s: float
    tp_allreduce_s_per_layer: float
    step_overhead_per_seq_s: float = 0.0

    def __post_init__(self) -> None:
        if not (0 < self.bandwidth_efficiency <= 1 and 0 < self.compute_efficiency <= 1):
            raise ValueError("efficiencies must lie in (0, 1]")
        if (
            min(
                self.step_overhead_s,
                self.prefill_overhead_s,
                self.tp_allreduce_s_per_layer,
                self.step_overhead_per_seq_s,
            )
            < 0
        ):
            raise ValueError("overheads must be >= 0")


# GPU constants: one set for every GPU, fitted together on the calibration table
# (nodes.calibration) by minimising the largest |log(predicted / published)| over a grid, with
# every value held inside its published range:
# - η_bw = 0.80. performance.md §2.2 derives 0.68-0.82 of peak HBM bandwidth from Vidur's decode
#   profiles (A100/H100/A40, linear ops only); Llama-3.1-8B on an A100-40GB decodes at 77 % of the
#   ceiling end to end; BLIS uses 0.72 (``BwEffConstant``).
# - η_mfu = 0.65. Vidur's prefill MFU at 4,096 tokens is 0.65-0.73; BLIS uses 0.65 (``mfuPrefill``).
# - 1.25 ms per decode step (scheduler, sampling, CUDA-graph launch), fitted; the A100-40GB anchor
#   runs 13.3 ms per token against a 10.4 ms bandwidth floor.
# - 40 µs per sequence per step (input preparation, sampling, output processing), fitted; it is
#   why Qwen2.5-0.5B on an L4 goes from 5.1 ms ITL at 1 sequence to 7.1 ms at 32 while neither its
#   weights nor its KV explain the difference, and why Koyeb's A100/L40S batch-32 ratio (1.72)
#   sits below their bandwidth ratio (2.36). The vLLM v0.6 blog names CPU-side work as the main
#   cost of small-model serving.
# - 3 ms per prefill pass (input preparation, eager kernels, first-token sampling) [U]; the
#   calibration table barely constrains it.
GPU_BANDWIDTH_EFFICIENCY = 0.80
GPU_COMPUTE_EFFICIENCY = 0.65
GPU_STEP_OVERHEAD_S = 1.25e-3
GPU_STEP_OVERHEAD_PER_SEQ_S = 40e-6
GPU_PREFILL_OVERHEAD_S = 3.0e-3

# CPU constants (vLLM CPU backend), roofline-only: no end-to-end vLLM-CPU anchor exists yet.
# η_bw = 0.80 of the node's bandwidth (llama.cpp decode runs near STREAM speed; see the Xeon
# cross-check in nodes.calibration); η_mfu = 0.5 for oneDNN bf16 GEMMs [U]; 10 ms per step,
# 100 µs per sequence and 20 ms per prefill for the Python-side work that CUDA graphs hide on
# GPUs [U].
CPU_BANDWIDTH_EFFICIENCY = 0.80
CPU_COMPUTE_EFFICIENCY = 0.50
CPU_STEP_OVERHEAD_S = 10.0e-3
CPU_STEP_OVERHEAD_PER_SEQ_S = 100e-6
CPU_PREFILL_OVERHEAD_S = 20.0e-3

# Tensor-parallel all-reduce per layer per pass: two small all-reduces per layer (attention output
# and MLP output). ~8 µs each for vLLM's custom all-reduce over NVLink, ~12 µs over xGMI, ~30 µs
# for NCCL over PCIe, ~50 µs through shared memory between CPU sockets [U, estimates; Vidur's
# network CSVs hold measured values for A100/H100 NVLink].
TP_ALLREDUCE_S_PER_LAYER: Mapping[str, float] = MappingProxyType(
    {
        "nvlink": 16e-6,
        "xgmi": 24e-6,
        "pcie": 60e-6,
        "none": 100e-6,
    }
)

# Memory vLLM holds outside weights and KV cache, per device: a fixed part (CUDA context, CUDA
# graphs, NCCL buffers, allocator slack on GPUs; the Python process and oneDNN workspaces on CPUs)
# plus the activation peak of its profiling pass over ``max_num_batched_tokens`` tokens (gate/up
# output 2 x intermediate / tp plus ~4 hidden-wide buffers, 16-bit) and fp32 logits for
# ``max_num_seqs`` sequences. 8,192 and 256 are vLLM's defaults [V vLLM engine args].
FIXED_RESERVE_GIB: Mapping[AcceleratorKind, float] = MappingProxyType(
    {
        AcceleratorKind.GPU: 1.0,
        AcceleratorKind.CPU: 2.0,
    }
)
PROFILE_BATCHED_TOKENS = 8192
PROFILE_MAX_SEQS = 256
ACTIVATION_BYTES = 2.0
LOGIT_BYTES = 4.0
# vLLM allocates KV cache in blocks of 16 tokens; a sequence holds whole blocks.
KV_BLOCK_TOKENS = 16


def efficiency_for(accelerator: AcceleratorSpec) -> EfficiencyConstants:
    """The default constants for ``accelerator``: one set per kind, all-reduce per interconnect."""
    allreduce = TP_ALLREDUCE_S_PER_LAYER[accelerator.interconnect]
    if accelerator.kind is AcceleratorKind.CPU:
        return EfficiencyConstants(
            CPU_BANDWIDTH_EFFICIENCY,
            CPU_COMPUTE_EFFICIENCY,
            CPU_STEP_OVERHEAD_S,
            CPU_PREFILL_OVERHEAD_S,
            allreduce,
            CPU_STEP_OVERHEAD_PER_SEQ_S,
        )
    return EfficiencyConstants(
        GPU_BANDWIDTH_EFFICIENCY,
        GPU_COMPUTE_EFFICIENCY,
        GPU_STEP_OVERHEAD_S,
        GPU_PREFILL_OVERHEAD_S,
        allreduce,
        GPU_STEP_OVERHEAD_PER_SEQ_S,
    )


@dataclass(frozen=True, slots=True)
class ReplicaPerformance:
    """Predicted memory use and speed of one replica of a model on ``tensor_parallel`` devices.

    Timings assume the replica fits (check ``fits``); they are computed either way so that
    callers can compare layouts. Times are seconds, sizes GiB unless the name says bytes.
    """

    accelerator: AcceleratorSpec
    architecture: ModelArchitecture
    dtype: Dtype
    tensor_parallel: int
    gpu_memory_utilization: float
    constants: EfficiencyConstants
    weights_gib_per_device: float
    kv_bytes_per_token: float
    kv_capacity_tokens: int

    @property
    def reserve_gib_per_device(self) -> float:
        """Memory held per device for activations, CUDA context and graphs (see module notes)."""
        return _reserve_gib(self.architecture, self.accelerator.kind, self.tensor_parallel)

    @property
    def fits(self) -> bool:
        """Weights and the activation reserve fit in the usable memory and leave room for KV."""
        usable = self.accelerator.memory_gib * self.gpu_memory_utilization
        needed = self.weights_gib_per_device + self.reserve_gib_per_device
        return needed < usable and self.kv_capacity_tokens > 0

    @property
    def _weight_bytes(self) -> float:
        return self.architecture.num_parameters * bytes_per_param(self.dtype)

    @property
    def _bandwidth(self) -> float:
        """Bytes/s the whole replica reads, efficiency applied."""
        peak = self.accelerator.memory_bandwidth_gbps * 1e9 * self.tensor_parallel
        return self.constants.bandwidth_efficiency * peak

    @property
    def _flops(self) -> float:
        """FLOP/s of the whole replica, efficiency applied; FP8 GEMMs where the card has them."""
        tflops = self.accelerator.bf16_tflops
        if self.dtype is Dtype.FP8 and self.accelerator.fp8_tflops is not None:
            tflops = self.accelerator.fp8_tflops
        return self.constants.compute_efficiency * tflops * 1e12 * self.tensor_parallel

    @property
    def _allreduce_s(self) -> float:
        if self.tensor_parallel == 1:
            return 0.0
        return self.architecture.num_layers * self.constants.tp_allreduce_s_per_layer

    def prefill_seconds(self, prompt_tokens: int) -> float:
        """One prefill pass over ``prompt_tokens`` tokens (no cached prefix).

        ``max(compute, weight read) + prefill overhead + all-reduce``, where compute covers the
        GEMMs (2·P FLOP per token) and causal attention (2·layers·tokens²·heads·head_dim FLOP).
        Grows with ``prompt_tokens``.
        """
        _require(prompt_tokens >= 0, "prompt_tokens must be >= 0")
        arch = self.architecture
        attention_width = arch.num_attention_heads * arch.head_dim
        flops = (
            2.0 * arch.num_parameters * prompt_tokens
            + 2.0 * arch.num_layers * prompt_tokens**2 * attention_width
        )
        compute = flops / self._flops
        weight_read = self._weight_bytes / self._bandwidth
        return max(compute, weight_read) + self.constants.prefill_overhead_s + self._allreduce_s

    def decode_step_seconds(self, batch_size: int, mean_context_tokens: int) -> float:
        """One decode step producing a token for each of ``batch_size`` sequences.

        ``max(memory, compute) + step overhead + batch · per-sequence overhead + all-reduce``:
        memory reads the weights once and every sequence's KV cache; compute is 2·P FLOP per
        sequence plus attention over its context. Grows with batch size and context.
        """
        _require(batch_size >= 1, "batch_size must be >= 1")
        _require(mean_context_tokens >= 0, "mean_context_tokens must be >= 0")
        arch = self.architecture
        kv_read = batch_size * mean_context_tokens * self.kv_bytes_per_token
        memory = (self._weight_bytes + kv_read) / self._bandwidth
        attention_flops = (
            4.0
            * arch.num_layers
            * batch_size
            * mean_context_tokens
            * arch.num_attention_heads
            * arch.head_dim
        )
        compute = (2.0 * arch.num_parameters * batch_size + attention_flops) / self._flops
        constants = self.constants
        overhead = constants.step_overhead_s + batch_size * constants.step_overhead_per_seq_s
        return max(memory, compute) + overhead + self._allreduce_s

    def decode_tokens_per_second(self, batch_size: int, mean_context_tokens: int) -> float:
        """Output tokens per second across the batch: ``batch_size / decode_step_seconds``."""
        return batch_size / self.decode_step_seconds(batch_size, mean_context_tokens)

    def serving_output_tokens_per_second(
        self, concurrency: int, prompt_tokens: int, output_tokens: int
    ) -> float:
        """Output tokens/s of a closed-loop benchmark that keeps ``concurrency`` requests in flight.

        In steady state each slot finishes one request per cycle; a cycle holds one prefill per
        slot and ``output_tokens - 1`` decode steps at the mean context ``prompt + output / 2``
        (the first token comes from the prefill). Prefills are counted as separate passes, so
        chunked prefill that folds them into decode steps runs somewhat faster than this.
        """
        _require(concurrency >= 1 and output_tokens >= 1, "concurrency, output_tokens must be >= 1")
        mean_context = prompt_tokens + output_tokens // 2
        decode = (output_tokens - 1) * self.decode_step_seconds(concurrency, mean_context)
        cycle = decode + concurrency * self.prefill_seconds(prompt_tokens)
        return concurrency * output_tokens / cycle

    def max_batch(self, context_tokens: int, max_num_seqs: int = 256) -> int:
        """Sequences of ``context_tokens`` tokens the KV cache holds at once (<= ``max_num_seqs``).

        Sequences hold whole 16-token blocks. 0 when the replica does not fit.
        """
        _require(context_tokens >= 1, "context_tokens must be >= 1")
        blocks_per_seq = math.ceil(context_tokens / KV_BLOCK_TOKENS)
        seqs = (self.kv_capacity_tokens // KV_BLOCK_TOKENS) // blocks_per_seq
        return min(max_num_seqs, seqs) if self.fits else 0

    def memory_required_gib(self, kv_tokens: int) -> float:
        """GiB each device needs for the weights, the reserve and ``kv_tokens`` tokens of KV."""
        _require(kv_tokens >= 0, "kv_tokens must be >= 0")
        kv_gib = kv_tokens * self.kv_bytes_per_token / self.tensor_parallel / GIB
        return self.weights_gib_per_device + self.reserve_gib_per_device + kv_gib


def replica_performance(
    architecture: ModelArchitecture,
    dtype: Dtype,
    accelerator: AcceleratorSpec,
    tensor_parallel: int = 1,
    gpu_memory_utilization: float = 0.9,
    kv_dtype_bytes: float = 2.0,
    constants: EfficiencyConstants | None = None,
) -> ReplicaPerformance:
    """Model a replica of ``architecture`` in ``dtype`` over ``tensor_parallel`` devices.

    Usable memory is ``memory_gib · gpu_memory_utilization`` per device (host memory on a CPU
    node, standing in for vLLM's ``VLLM_CPU_KVCACHE_SPACE``); weights and the reserve come off,
    and the rest holds KV cache, rounded down to whole 16-token blocks. When
    ``tensor_parallel`` exceeds the KV heads, vLLM replicates them, so KV per token grows.
    Raises ValueError when ``tensor_parallel`` does not divide the attention heads.
    """
    _require(tensor_parallel >= 1, "tensor_parallel must be >= 1")
    _require(
        architecture.num_attention_heads % tensor_parallel == 0,
        f"tensor_parallel {tensor_parallel} must divide "
        f"{architecture.num_attention_heads} attention heads",
    )
    _require(0 < gpu_memory_utilization <= 1, "gpu_memory_utilization must lie in (0, 1]")
    _require(kv_dtype_bytes > 0, "kv_dtype_bytes must be > 0")
    kv_heads_per_device = math.ceil(architecture.num_kv_heads / tensor_parallel)
    kv_bytes_per_device = (
        2.0 * architecture.num_layers * kv_heads_per_device * architecture.head_dim * kv_dtype_bytes
    )
    weights_gib = architecture.num_parameters * bytes_per_param(dtype) / tensor_parallel / GIB
    reserve = _reserve_gib(architecture, accelerator.kind, tensor_parallel)
    free_gib = accelerator.memory_gib * gpu_memory_utilization - weights_gib - reserve
    tokens = int(max(0.0, free_gib) * GIB // kv_bytes_per_device)
    return ReplicaPerformance(
        accelerator=accelerator,
        architecture=architecture,
        dtype=dtype,
        tensor_parallel=tensor_parallel,
        gpu_memory_utilization=gpu_memory_utilization,
        constants=constants if constants is not None else efficiency_for(accelerator),
        weights_gib_per_device=weights_gib,
        kv_bytes_per_token=kv_bytes_per_device * tensor_parallel,
        kv_capacity_tokens=tokens // KV_BLOCK_TOKENS * KV_BLOCK_TOKENS,
    )


def _reserve_gib(arch: ModelArchitecture, kind: AcceleratorKind, tensor_parallel: int) -> float:
    per_token = 2 * arch.intermediate_size / tensor_parallel + 4 * arch.hidden_size
    activations = PROFILE_BATCHED_TOKENS * per_token * ACTIVATION_BYTES
    logits = PROFILE_MAX_SEQS * arch.vocab_size * LOGIT_BYTES
    return FIXED_RESERVE_GIB[kind] + (activations + logits) / GIB


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)
