"""The roofline performance model: fit, KV capacity, monotonicity, tensor parallelism, CPU nodes."""

from __future__ import annotations

import pytest

from nodes.accelerators import ACCELERATORS, AcceleratorSpec, accelerator
from nodes.models import MODELS, Dtype, ModelArchitecture
from nodes.performance import (
    EfficiencyConstants,
    ReplicaPerformance,
    efficiency_for,
    replica_performance,
)

LLAMA_8B = MODELS["llama-3.1-8b"].architecture
LLAMA_70B = MODELS["llama-3.1-70b"].architecture
QWEN_05B = MODELS["qwen2.5-0.5b"].architecture


def _replica(arch: ModelArchitecture, card: str, tp: int = 1,
             dtype: Dtype = Dtype.BF16) -> ReplicaPerformance:
    return replica_performance(arch, dtype, accelerator(card), tensor_parallel=tp)


CASES = [
    (LLAMA_8B, "A100-80GB"),
    (LLAMA_8B, "L4"),
    (QWEN_05B, "H100-SXM"),
    (QWEN_05B, "CPU"),
    (LLAMA_70B, "H100-SXM"),
]


@pytest.mark.parametrize(("arch", "card"), CASES)
def test_step_time_grows_with_batch_and_context(arch: ModelArchitecture, card: str) -> None:
    replica = _replica(arch, card)
    batches = [replica.decode_step_seconds(b, 1024) for b in (1, 2, 8, 32, 128, 256)]
    contexts = [replica.decode_step_seconds(16, c) for c in (0, 128, 1024, 8192, 32768)]
    assert batches == sorted(batches) and len(set(batches)) == len(batches)
    assert contexts == sorted(contexts) and len(set(contexts)) == len(contexts)


@pytest.mark.parametrize(("arch", "card"), CASES)
def test_prefill_grows_with_tokens(arch: ModelArchitecture, card: str) -> None:
    replica = _replica(arch, card)
    times = [replica.prefill_seconds(t) for t in (1, 512, 2048, 8192, 32768)]
    assert times == sorted(times) and times[-1] > times[1]


@pytest.mark.parametrize(("arch", "card"), CASES)
def test_batching_raises_throughput(arch: ModelArchitecture, card: str) -> None:
    replica = _replica(arch, card)
    assert replica.decode_tokens_per_second(32, 1024) > replica.decode_tokens_per_second(1, 1024)
    assert replica.decode_tokens_per_second(8, 512) == pytest.approx(
        8 / replica.decode_step_seconds(8, 512)
    )


def test_prefill_is_never_faster_than_reading_the_weights_once() -> None:
    replica = _replica(LLAMA_8B, "L4")
    weight_read = 16.06e9 / (replica.constants.bandwidth_efficiency * 300e9)
    assert replica.prefill_seconds(1) >= weight_read


def test_70b_bf16_needs_two_h100s_and_tp2_decodes_faster() -> None:
    one, two = _replica(LLAMA_70B, "H100-SXM", 1), _replica(LLAMA_70B, "H100-SXM", 2)
    assert not one.fits and one.kv_capacity_tokens == 0 and one.max_batch(1024) == 0
    assert two.fits and two.kv_capacity_tokens > 0
    assert two.weights_gib_per_device == pytest.approx(one.weights_gib_per_device / 2)
    for batch in (1, 16, 64):
        assert two.decode_step_seconds(batch, 2048) < one.decode_step_seconds(batch, 2048)
    assert two.prefill_seconds(2048) < one.prefill_seconds(2048)


def test_tp_adds_allreduce_time_per_layer() -> None:
    one, two = _replica(LLAMA_8B, "L40S", 1), _replica(LLAMA_8B, "L40S", 2)
    halved = one.decode_step_seconds(1, 0) - one.constants.step_overhead_s
    allreduce = LLAMA_8B.num_layers * two.constants.tp_allreduce_s_per_layer
    expected = (halved - one.constants.step_overhead_per_seq_s) / 2 + allreduce
    assert two.decode_step_seconds(1, 0) == pytest.approx(
        expected + two.constants.step_overhead_s + two.constants.step_overhead_per_seq_s
    )


def test_kv_capacity_of_8b_small_on_l4_large_on_a100_80() -> None:
    l4, a100 = _replica(LLAMA_8B, "L4"), _replica(LLAMA_8B, "A100-80GB")
    assert l4.fits and 0 < l4.kv_capacity_tokens < 40_000
    assert a100.kv_capacity_tokens > 10 * l4.kv_capacity_tokens
    # 79.2 GiB x 0.9 less 14.96 GiB of weights and ~1.8 GiB reserve, at 128 KiB per token.
    assert a100.kv_capacity_tokens == pytest.approx(446_000, rel=0.02)
    assert l4.kv_capacity_tokens % 16 == 0


def test_more_utilization_more_kv() -> None:
    low = replica_performance(LLAMA_8B, Dtype.BF16, ACCELERATORS["L40S"],
                              gpu_memory_utilization=0.8)
    high = replica_performance(LLAMA_8B, Dtype.BF16, ACCELERATORS["L40S"],
                               gpu_memory_utilization=0.95)
    assert high.kv_capacity_tokens > low.kv_capacity_tokens


def test_fp8_kv_doubles_capacity() -> None:
    bf16 = replica_performance(LLAMA_8B, Dtype.BF16, ACCELERATORS["L40S"])
    fp8 = replica_performance(LLAMA_8B, Dtype.BF16, ACCELERATORS["L40S"], kv_dtype_bytes=1.0)
    assert fp8.kv_capacity_tokens == pytest.approx(2 * bf16.kv_capacity_tokens, abs=16)


def test_quantized_weights_fit_where_bf16_does_not() -> None:
    assert not _replica(LLAMA_8B, "T4", dtype=Dtype.FP16).fits
    assert _replica(LLAMA_8B, "T4", dtype=Dtype.AWQ).fits


def test_fp8_prefill_uses_fp8_tensor_cores() -> None:
    bf16, fp8 = _replica(LLAMA_8B, "H100-SXM"), _replica(LLAMA_8B, "H100-SXM", dtype=Dtype.FP8)
    assert fp8.prefill_seconds(4096) < 0.6 * bf16.prefill_seconds(4096)


def test_max_batch_is_kv_limited_and_capped() -> None:
    l4 = _replica(LLAMA_8B, "L4")
    assert l4.max_batch(2048) == l4.kv_capacity_tokens // 2048
    assert l4.max_batch(16) == 256 and l4.max_batch(16, max_num_seqs=64) == 64
    assert l4.max_batch(100) == l4.kv_capacity_tokens // 112  # 7 blocks of 16 tokens each
    assert l4.max_batch(l4.kv_capacity_tokens) == 1
    assert l4.max_batch(l4.kv_capacity_tokens + 16) == 0


def test_memory_required_matches_capacity() -> None:
    replica = _replica(LLAMA_8B, "A100-40GB")
    usable = replica.accelerator.memory_gib * replica.gpu_memory_utilization
    assert replica.memory_required_gib(0) == pytest.approx(
        replica.weights_gib_per_device + replica.reserve_gib_per_device
    )
    at_capacity = replica.memory_required_gib(replica.kv_capacity_tokens)
    assert usable - 0.01 <= at_capacity <= usable
    assert replica.memory_required_gib(replica.kv_capacity_tokens + 1000) > usable


def test_cpu_node_serves_qwen_05b_slowly() -> None:
    cpu, l4 = _replica(QWEN_05B, "CPU"), _replica(QWEN_05B, "L4")
    assert cpu.fits and cpu.max_batch(2048) > 0
    single = cpu.decode_tokens_per_second(1, 512)
    assert 10 < single < 100
    assert single < l4.decode_tokens_per_second(1, 512) / 2
    assert 0.1 < cpu.prefill_seconds(512) < 5
    assert cpu.prefill_seconds(512) > 10 * l4.prefill_seconds(512)


def test_serving_throughput_counts_prefills() -> None:
    replica = _replica(LLAMA_8B, "A100-80GB")
    pure_decode = replica.decode_tokens_per_second(16, 1024 + 64)
    serving = replica.serving_output_tokens_per_second(16, 1024, 128)
    assert serving < pure_decode
    assert replica.serving_output_tokens_per_second(1, 1024, 128) < serving


def test_constants_lie_in_published_ranges() -> None:
    gpu = efficiency_for(ACCELERATORS["H100-SXM"])
    assert 0.68 <= gpu.bandwidth_efficiency <= 0.82  # performance.md §2.2 (Vidur)
    assert 0.65 <= gpu.compute_efficiency <= 0.73
    cpu = efficiency_for(ACCELERATORS["CPU"])
    assert cpu.step_overhead_s > gpu.step_overhead_s


@pytest.mark.parametrize(("slow", "fast"), [("L4", "H100-SXM"), ("A10G", "MI300X")])
def test_allreduce_over_pcie_costs_more_than_nvlink_or_xgmi(slow: str, fast: str) -> None:
    assert (efficiency_for(ACCELERATORS[slow]).tp_allreduce_s_per_layer
            > efficiency_for(ACCELERATORS[fast]).tp_allreduce_s_per_layer)


def test_custom_constants_are_used() -> None:
    spec: AcceleratorSpec = ACCELERATORS["L4"]
    slow = EfficiencyConstants(0.4, 0.3, 0.01, 0.02, 1e-4)
    default = replica_performance(QWEN_05B, Dtype.BF16, spec)
    custom = replica_performance(QWEN_05B, Dtype.BF16, spec, constants=slow)
    assert custom.constants is slow
    assert custom.decode_step_seconds(1, 0) > default.decode_step_seconds(1, 0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"tensor_parallel": 3},
        {"tensor_parallel": 0},
        {"gpu_memory_utilization": 0.0},
        {"gpu_memory_utilization": 1.5},
        {"kv_dtype_bytes": 0.0},
    ],
)
def test_invalid_layouts_raise(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        replica_performance(LLAMA_8B, Dtype.BF16, ACCELERATORS["H100-SXM"], **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "values", [(0.0, 0.5, 0, 0, 0), (0.5, 1.2, 0, 0, 0), (0.5, 0.5, -1e-3, 0, 0)]
)
def test_constants_reject_nonsense(values: tuple[float, float, float, float, float]) -> None:
    with pytest.raises(ValueError):
        EfficiencyConstants(*values)
