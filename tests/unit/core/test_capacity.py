"""Capacity tables: buckets, the formulas, reasons for zero, monotonicity, and the calibration of
the latency classes' headroom against the simulator (one replica at its table rate)."""

from __future__ import annotations

import itertools
import random

import pytest

from nodes.accelerators import AcceleratorSpec, accelerator, cpu_accelerator
from nodes.performance import ReplicaPerformance
from scheduler.config import ClassTargets, ModelConfig, TrafficClassesConfig, parse_config
from scheduler.framework.placement import PlacementPlan, ReplicaAssignment
from scheduler.placement.capacity import (
    BUCKET_MIN_TOKENS,
    DEFAULT_BUCKET,
    RequestBucket,
    bucket_tokens,
    capacity_point,
    capacity_rows,
    demand_capacity,
    grid_below,
    replica_capacity,
    request_bucket,
)
from scheduler.placement.shapes import performance
from scheduler.plugins import PluginRegistry
from scheduler.simulator.run import simulate
from scheduler.simulator.trace import synthetic_trace
from scheduler.types import TrafficClass

CLASSES = TrafficClassesConfig()
INTERACTIVE, STANDARD = CLASSES.interactive, CLASSES.standard
CPU16 = cpu_accelerator(cores=16, memory_gib=64)


def _perf(model: str, card: str | AcceleratorSpec, tp: int = 1) -> ReplicaPerformance:
    spec = accelerator(card) if isinstance(card, str) else card
    return performance(ModelConfig(name=model), spec, tp, 0.9)


def _closed_loop(perf: ReplicaPerformance, prompt: int, output: int, batch: int) -> float:
    """The module's X(b), written out again."""
    step = perf.decode_step_seconds(batch, prompt + output // 2)
    return batch / (batch * perf.prefill_seconds(prompt) + (output - 1) * step)


# ---------------------------------------------------------------------------------- buckets


@pytest.mark.parametrize(
    ("tokens", "bucket"),
    [(1, 16), (16, 16), (17, 24), (24, 24), (25, 32), (33, 48), (49, 64), (100, 128),
     (129, 192), (512, 512), (513, 768), (769, 1024), (5000, 6144)],
)  # fmt: skip
def test_tokens_round_up_to_the_grid(tokens: int, bucket: int) -> None:
    assert bucket_tokens(tokens) == bucket


def test_buckets_never_shrink_a_request_and_grow_it_by_at_most_half() -> None:
    for tokens in range(1, 20_000):
        bucket = bucket_tokens(tokens)
        assert tokens <= bucket <= max(16, 1.5 * tokens)
        assert bucket_tokens(bucket) == bucket


def test_request_bucket() -> None:
    assert request_bucket(600, 100) == RequestBucket(768, 128)
    assert str(request_bucket(600, 100)) == "768/128"
    assert request_bucket(512, 128) == DEFAULT_BUCKET


# ---------------------------------------------------------------------------------- formulas


def test_a_deadline_only_class_gets_the_closed_loop_throughput_of_the_largest_batch() -> None:
    perf = _perf("llama-3.1-8b", "H100-SXM")
    point = replica_capacity(perf, ClassTargets(deadline_s=86_400), 512, 128, 256)
    prefill, step = perf.prefill_seconds(512), perf.decode_step_seconds(256, 576)
    assert point.batch == 256 and point.reason == ""
    assert point.rate_per_s == pytest.approx(_closed_loop(perf, 512, 128, 256))
    # The same formula as the benchmark figure the performance model is calibrated on.
    benchmark = perf.serving_output_tokens_per_second(256, 512, 128) / 128
    assert point.rate_per_s == pytest.approx(benchmark)
    assert point.tpot_s == pytest.approx(step + 255 * prefill / 127)
    assert point.ttft_s == pytest.approx(prefill + step)


def test_a_deadline_caps_the_batch_where_the_latency_crosses_it() -> None:
    perf = _perf("llama-3.1-8b", "A100-80GB")

    def latency(batch: int) -> float:
        prefill, step = perf.prefill_seconds(512), perf.decode_step_seconds(batch, 576)
        return prefill + step + 127 * (step + (batch - 1) * prefill / 127)

    point = replica_capacity(perf, ClassTargets(deadline_s=latency(64) * 1.000001), 512, 128, 256)
    assert point.batch == 64
    assert point.rate_per_s == pytest.approx(_closed_loop(perf, 512, 128, 64))


@pytest.mark.parametrize(("max_num_seqs", "expected"), [(8, 8), (256, 24_832 // 640)])
def test_max_num_seqs_and_the_kv_cache_bound_the_batch(max_num_seqs: int, expected: int) -> None:
    perf = _perf("llama-3.1-8b", "L4")
    assert perf.kv_capacity_tokens == 24_832
    point = replica_capacity(perf, ClassTargets(deadline_s=86_400), 512, 128, max_num_seqs)
    assert point.batch == expected


LATENCY_CASES = [
    ("llama-3.1-8b", "H100-SXM", INTERACTIVE),
    ("llama-3.1-8b", "H100-SXM", STANDARD),
    ("llama-3.1-8b", "A100-80GB", INTERACTIVE),
    ("llama-3.1-8b", "L4", STANDARD),
    ("qwen2.5-0.5b", "L4", INTERACTIVE),
    ("qwen2.5-0.5b", CPU16, STANDARD),
]


@pytest.mark.parametrize(("model", "card", "targets"), LATENCY_CASES)
def test_a_latency_class_meets_its_targets_below_the_closed_loop_rate(
    model: str, card: str | AcceleratorSpec, targets: ClassTargets
) -> None:
    perf = _perf(model, card)
    point = replica_capacity(perf, targets, 512, 128, 256)
    assert 0 < point.rate_per_s < _closed_loop(perf, 512, 128, point.batch)
    assert targets.ttft_s is not None and targets.tpot_s is not None
    assert point.ttft_s <= targets.ttft_s * (1 + 1e-9)
    assert point.tpot_s <= targets.tpot_s * (1 + 1e-9)


def test_headroom_is_larger_on_small_replicas() -> None:
    def kept(card: str) -> float:
        perf = _perf("llama-3.1-8b", card)
        point = replica_capacity(perf, STANDARD, 512, 128, 256)
        return point.rate_per_s / _closed_loop(perf, 512, 128, point.batch)

    assert kept("L4") < 0.7 < 0.9 < kept("H100-SXM") < 1.0


def test_capacity_point_is_memoised_per_bucket() -> None:
    perf = _perf("qwen2.5-0.5b", "L4")
    first = capacity_point(perf, STANDARD, DEFAULT_BUCKET, 256)
    assert capacity_point(perf, STANDARD, RequestBucket(512, 128), 256) is first
    assert first == replica_capacity(perf, STANDARD, 512, 128, 256)


# ------------------------------------------------------------------------- reasons for zero


@pytest.mark.parametrize(
    ("model", "card", "targets", "prompt", "reason"),
    [
        ("llama-3.1-8b", "L4", INTERACTIVE, 512, "even alone, TPOT 69 ms, above the 50 ms target"),
        ("qwen2.5-0.5b", CPU16, INTERACTIVE, 512,
         "even alone, TTFT 689 ms, above the 500 ms target"),
        ("llama-3.1-8b", "L4", ClassTargets(deadline_s=5), 512,
         "even alone, a request takes 8.9 s, beyond the 5 s deadline"),
        ("llama-3.1-8b", "L4", STANDARD, 100_000,
         "a request needs 100,128 tokens of KV cache, the replica holds 24,832"),
        ("llama-3.1-70b", "L4", STANDARD, 512,
         "the replica does not fit: 131.4 GiB of weights and 2.5 GiB of runtime reserve per "
         "device, 19.8 GiB usable"),
    ],
)  # fmt: skip
def test_a_zero_rate_says_why(
    model: str, card: str | AcceleratorSpec, targets: ClassTargets, prompt: int, reason: str
) -> None:
    point = replica_capacity(_perf(model, card), targets, prompt, 128, 256)
    assert (point.rate_per_s, point.batch, point.reason) == (0.0, 0, reason)


def test_every_zero_rate_and_only_a_zero_rate_has_a_reason() -> None:
    perfs = [_perf("llama-3.1-8b", "L4"), _perf("qwen2.5-0.5b", CPU16), _perf("qwen2.5-7b", "A10G")]
    targets = [INTERACTIVE, STANDARD, ClassTargets(deadline_s=30), ClassTargets(ttft_s=0.2)]
    for perf, target, (prompt, output) in itertools.product(
        perfs, targets, [(512, 128), (4096, 512), (30_000, 64)]
    ):
        point = replica_capacity(perf, target, prompt, output, 256)
        assert (point.rate_per_s == 0) == bool(point.reason) == (point.batch == 0), point


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="must be >= 1"):
        replica_capacity(_perf("qwen2.5-0.5b", "L4"), STANDARD, 0, 128, 256)


# ----------------------------------------------------------------------------- monotonicity

SIZES = [(128, 64), (512, 128), (2048, 256)]


@pytest.mark.parametrize(
    ("tight", "loose"),
    [
        (ClassTargets(ttft_s=0.3, tpot_s=0.05), ClassTargets(ttft_s=0.5, tpot_s=0.05)),
        (ClassTargets(ttft_s=0.5, tpot_s=0.03), ClassTargets(ttft_s=0.5, tpot_s=0.05)),
        (INTERACTIVE, STANDARD),
        (INTERACTIVE, ClassTargets(tpot_s=0.05)),
        (ClassTargets(deadline_s=10), ClassTargets(deadline_s=100)),
    ],
)
def test_a_looser_target_never_lowers_the_rate(tight: ClassTargets, loose: ClassTargets) -> None:
    for (model, card), (prompt, output) in itertools.product(
        [("llama-3.1-8b", "A100-80GB"), ("qwen2.5-0.5b", "L4"), ("qwen2.5-7b", "A10G")], SIZES
    ):
        perf = _perf(model, card)
        before = replica_capacity(perf, tight, prompt, output, 256).rate_per_s
        after = replica_capacity(perf, loose, prompt, output, 256).rate_per_s
        assert after >= before * (1 - 1e-9), (model, card, prompt, output)


@pytest.mark.parametrize(
    ("slow", "fast"),
    [("L4", "L40S"), ("A10G", "L40S"), ("A100-80GB", "H200"), ("H100-SXM", "H200")],
)
def test_a_faster_card_never_lowers_the_rate(slow: str, fast: str) -> None:
    for model, targets, (prompt, output) in itertools.product(
        ["llama-3.1-8b", "qwen2.5-0.5b"],
        [INTERACTIVE, STANDARD, ClassTargets(deadline_s=60)],
        SIZES,
    ):
        before = replica_capacity(_perf(model, slow), targets, prompt, output, 256).rate_per_s
        after = replica_capacity(_perf(model, fast), targets, prompt, output, 256).rate_per_s
        assert after >= before * (1 - 1e-9), (model, targets, prompt, output)


BUCKET_TARGETS = [INTERACTIVE, STANDARD, ClassTargets(deadline_s=86_400), ClassTargets(ttft_s=1)]


@pytest.mark.parametrize("targets", BUCKET_TARGETS)
def test_a_bigger_prompt_never_raises_the_rate(targets: ClassTargets) -> None:
    for (model, card), prompt, output in itertools.product(
        [("llama-3.1-8b", "H100-SXM"), ("qwen2.5-0.5b", "L4")], [128, 512, 2048], [64, 256]
    ):
        perf = _perf(model, card)
        small = replica_capacity(perf, targets, prompt, output, 256).rate_per_s
        big = replica_capacity(perf, targets, prompt * 2, output, 256).rate_per_s
        assert big <= small * (1 + 1e-9), (model, card, prompt, output)


@pytest.mark.parametrize(
    "targets", [INTERACTIVE, STANDARD, ClassTargets(deadline_s=86_400), ClassTargets(ttft_s=1)]
)
def test_a_bigger_bucket_never_raises_the_rate_of_a_chat_sized_request(
    targets: ClassTargets,
) -> None:
    for model, card in [("llama-3.1-8b", "H100-SXM"), ("qwen2.5-0.5b", "L4")]:
        perf = _perf(model, card)
        rates = [
            replica_capacity(perf, targets, prompt, output, 256).rate_per_s
            for prompt, output in [(256, 128), (512, 128), (512, 256), (1024, 256), (1024, 512)]
        ]
        assert rates == sorted(rates, reverse=True), (model, card, rates)


def test_where_prefill_stalls_bind_the_tpot_a_longer_output_can_raise_the_rate() -> None:
    # Documented exception: a request's TPOT counts the prefills of others admitted while it
    # decodes; with 31 output steps one 4k-token prefill already uses the budget, with 63 two.
    perf = _perf("llama-3.1-8b", "A100-80GB")
    targets = ClassTargets(tpot_s=0.03)
    short = replica_capacity(perf, targets, 4096, 32, 256).rate_per_s
    long = replica_capacity(perf, targets, 4096, 64, 256).rate_per_s
    assert 2 * short < long


# --------------------------------------------------------------- calibration on the simulator


def _attainment(
    registry: PluginRegistry,
    model: str,
    card: str,
    traffic_class: TrafficClass,
    times: float,
    duration_s: float,
) -> float:
    """SLO attainment of one replica fed Poisson arrivals at ``times`` its table rate, with the
    default bucket's fixed sizes, through the gateway's routing (``simulate``)."""
    cpu = "\n      cpu: {cores: 16, memory_gib: 64}" if card == "CPU" else ""
    config = parse_config(
        f"""
fleet:
  node_groups:
    - name: g
      accelerator: {card}
      nodes: 1{cpu}
models:
  - {{name: {model}}}
"""
    )
    (row,) = [r for r in capacity_rows(config) if r.traffic_class is traffic_class]
    assert row.bucket == DEFAULT_BUCKET and row.point.rate_per_s > 0
    plan = PlacementPlan((ReplicaAssignment("r0", model, "g-0", row.accelerator, 1, 1.0),))
    trace = synthetic_trace(
        random.Random(7),
        model=model,
        duration_s=duration_s,
        rate_per_s=row.point.rate_per_s * times,
        mix={traffic_class: 1.0},
        prompt=lambda _: DEFAULT_BUCKET.prompt_tokens,
        output=lambda _: DEFAULT_BUCKET.output_tokens,
    )
    report = simulate(config, plan, trace, seed=7, registry=registry)
    attainment = report.classes[traffic_class].slo_attainment
    assert attainment is not None
    return attainment


GOALS = {TrafficClass.INTERACTIVE: 0.99, TrafficClass.STANDARD: 0.95}


@pytest.mark.parametrize(
    ("model", "card"),
    [("llama-3.1-8b", "H100-SXM"), ("llama-3.1-8b", "A100-80GB"), ("qwen2.5-0.5b", "L4")],
)
@pytest.mark.parametrize("traffic_class", [TrafficClass.INTERACTIVE, TrafficClass.STANDARD])
def test_one_replica_at_its_table_rate_meets_the_slo_and_at_twice_it_does_not(
    registry: PluginRegistry, model: str, card: str, traffic_class: TrafficClass
) -> None:
    assert _attainment(registry, model, card, traffic_class, 1.0, 200) >= GOALS[traffic_class]
    # Measured 0.0-2.6 %: these tables sit within 1.5x of what the replica can do.
    assert _attainment(registry, model, card, traffic_class, 2.0, 100) < 0.5


def test_a_small_replica_keeps_its_slo_at_the_table_rate(registry: PluginRegistry) -> None:
    # Llama-3.1-8B on an L4 batches at most 38 requests: concurrency swings matter most.
    standard = TrafficClass.STANDARD
    assert _attainment(registry, "llama-3.1-8b", "L4", standard, 1.0, 600) >= GOALS[standard]
    assert _attainment(registry, "llama-3.1-8b", "L4", standard, 2.0, 300) < 0.8


def test_a_cpu_node_serves_standard_but_not_interactive_traffic(registry: PluginRegistry) -> None:
    # A 512-token prompt takes 0.67 s to prefill on 16 cores: too slow for a 0.5 s TTFT, and the
    # TTFT tail bounds the standard class (measured 99.6 % at 1x, 98.5 % at 2x, 92 % at 3x).
    rows = capacity_rows(parse_config(_CPU_FLEET))
    interactive, standard, batch = (row.point for row in rows)
    assert [row.traffic_class for row in rows] == list(TrafficClass)
    assert interactive.rate_per_s == 0
    assert interactive.reason == "even alone, TTFT 689 ms, above the 500 ms target"
    assert 0 < standard.rate_per_s < batch.rate_per_s
    stand = TrafficClass.STANDARD
    assert _attainment(registry, "qwen2.5-0.5b", "CPU", stand, 1.0, 1000) >= GOALS[stand]


_CPU_FLEET = """
fleet:
  node_groups:
    - {name: cpu, accelerator: CPU, nodes: 1, cpu: {cores: 16, memory_gib: 64}}
models:
  - {name: qwen2.5-0.5b}
"""


@pytest.mark.parametrize("tokens", [1, 16, 17, 23, 24, 40, 48, 50, 64, 100, 767, 768, 1155, 4097])
def test_the_grid_brackets_every_size(tokens: int) -> None:
    low, high = grid_below(tokens), bucket_tokens(tokens)
    assert low <= max(tokens, BUCKET_MIN_TOKENS) <= high
    assert bucket_tokens(low) == low  # both ends are grid values
    assert low == high or bucket_tokens(low + 1) == high  # and neighbours


@pytest.mark.parametrize(
    ("model", "card", "cls"),
    [
        ("llama-3.1-8b", "H100-SXM", TrafficClass.INTERACTIVE),
        ("llama-3.1-8b", "A100-80GB", TrafficClass.BATCH),
        ("qwen2.5-0.5b", "L4", TrafficClass.STANDARD),
    ],
)
def test_a_demand_is_rated_at_its_own_size_between_the_grid_buckets(
    model: str, card: str, cls: TrafficClass
) -> None:
    perf, targets = _perf(model, card), CLASSES.targets(cls)
    on_grid = demand_capacity(perf, targets, 1536, 256, 256)
    grid_point = capacity_point(perf, targets, RequestBucket(1536, 256), 256)
    assert on_grid.rate_per_s == pytest.approx(grid_point.rate_per_s, rel=1e-12)
    rate = demand_capacity(perf, targets, 1155, 211, 256).rate_per_s
    below = capacity_point(perf, targets, RequestBucket(1024, 192), 256).rate_per_s
    above = capacity_point(perf, targets, RequestBucket(1536, 256), 256).rate_per_s
    assert above < rate < below, "between the buckets around it, not the rounded-up one"


def test_a_size_whose_lower_bucket_cannot_be_served_falls_back_to_the_grid_point() -> None:
    perf, targets = _perf("qwen2.5-0.5b", "L4"), CLASSES.targets(TrafficClass.INTERACTIVE)
    # An output far beyond the KV cache on both sides: the rounded-up bucket's reason stands.
    huge = demand_capacity(perf, targets, 10_000_000, 100, 256)
    assert huge.rate_per_s == 0 and huge.reason
