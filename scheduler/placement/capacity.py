"""Capacity tables: the request rate one replica sustains within a traffic class's targets.

Mélange's "max throughput under SLO", from the roofline model (``nodes.performance``) and the
simulator's batching rules (``scheduler.simulator.replica``): each prompt is prefilled (in
chunks under vLLM's per-step token budget when long) and its last chunk emits its first token,
then every decode step serves every running request. With
``b`` requests of ``T`` prompt and ``o`` output tokens running, each costs one prefill
``P = prefill(T)`` and ``o - 1`` decode steps ``s(b) = step(b, T + o/2)``, so::

    X(b)    = b / (b·P + (o-1)·s(b))       requests per second, b always present (closed loop)
    tpot    = s(b) + k·P / (o-1)           k others' prefills interleave with its decoding
    ttft    = P + D                        own prefill after a delay D: the phase in progress
                                           and the prefills admitted before or with it
    latency = ttft + (o-1)·tpot            arrival to last token

A **deadline-only (batch) class** takes the largest ``b`` (up to ``max_num_seqs`` and the KV
cache's ``kv_capacity // (T + o)``) whose closed-loop latency (``k = b - 1``, ``D = s(b)``) fits
the deadline, and its rate is ``X(b)``: no headroom. A **latency class** (a TTFT or TPOT target)
takes the Poisson arrival rate that keeps three tails (``scheduler.placement.queueing``) under
``TAIL_PROBABILITY``: the concurrency above a peak ``b``, the count ``k`` of prefills
interleaved in one request's decode above the TPOT budget ``(tpot - s(b))·(o-1) / P``, and the
delay ``D`` above the TTFT budget ``ttft - P``; the peak is the one that allows the most. That
is the latency classes' headroom: larger on small replicas, whose concurrency swings more, and
for long prompts. A zero rate always carries a sentence saying why. Request sizes are rounded up
to a grid (``request_bucket``) so that tables are finite and cacheable.

Monotone: a looser target or a faster replica never lowers a rate, nor does a shorter prompt.
A longer output usually lowers it, except where prefill stalls bind the TPOT: there more output
tokens spread the same stalls thinner (the simulator agrees; ``docs/performance-model.md`` §6).

Everything here is pure; ``capacity_point`` memoises over hashable inputs.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from nodes.performance import ReplicaPerformance
from scheduler.config import ClassTargets, GearshiftConfig, ModelConfig, NodeGroup
from scheduler.framework.placement import ClassDemand, ReplicaShape
from scheduler.placement.queueing import (
    first_token_delay_s,
    max_first_token_rate,
    max_poisson_mean,
    max_rate,
    poisson_quantile,
)
from scheduler.placement.shapes import group_accelerator, performance, replica_shapes
from scheduler.types import TrafficClass

TAIL_PROBABILITY = 0.005
"""The latency classes' headroom constant: how often random arrivals may push a replica past
its peak concurrency, or a request past its TPOT or TTFT budget. Half the interactive class's
1 % miss budget, because the three tails add up and each approximation errs by about as much.
Calibrated on the simulator: ``docs/performance-model.md`` §6 has the measurements and
``tests/unit/core/test_capacity.py`` pins them."""

BUCKET_MIN_TOKENS = 16
"""Smallest bucket; the grid above it has two steps per octave (16, 24, 32, 48, 64, 96, ...)."""


@dataclass(frozen=True, slots=True, order=True)
class RequestBucket:
    """A request size: prompt and output tokens (on the bucket grid where it keys the table,
    the demand's own mean sizes where a shape is rated for a demand)."""

    prompt_tokens: int
    output_tokens: int

    def __str__(self) -> str:
        return f"{self.prompt_tokens}/{self.output_tokens}"


DEFAULT_BUCKET = RequestBucket(512, 128)
"""The size assumed for a class with no demand (a chat turn)."""


def bucket_tokens(tokens: int) -> int:
    """``tokens`` rounded up to the grid ``{2ᵏ, 1.5·2ᵏ : k ≥ 4}`` (from ``BUCKET_MIN_TOKENS``):
    never less, and at most 50 % more."""
    if tokens <= BUCKET_MIN_TOKENS:
        return BUCKET_MIN_TOKENS
    power = 1 << (tokens - 1).bit_length()
    three_quarters = power * 3 // 4
    return three_quarters if three_quarters >= tokens else power


def request_bucket(prompt_tokens: int, output_tokens: int) -> RequestBucket:
    """The bucket a (prompt, output) request size falls in."""
    return RequestBucket(bucket_tokens(prompt_tokens), bucket_tokens(output_tokens))


def grid_below(tokens: int) -> int:
    """The largest grid value at most ``tokens`` (``BUCKET_MIN_TOKENS`` below the grid)."""
    upper = bucket_tokens(tokens)
    if upper == tokens or tokens <= BUCKET_MIN_TOKENS:
        return upper
    power_of_two = upper & (upper - 1) == 0
    return upper * 3 // 4 if power_of_two else upper * 2 // 3


# ------------------------------------------------------------------------------- the formula


@dataclass(frozen=True, slots=True)
class CapacityPoint:
    """What one replica sustains for one class and request size.

    ``batch`` is the peak concurrency the rate allows for (0 when the rate is 0); ``ttft_s`` and
    ``tpot_s`` are the predictions at that rate and peak, or for a lone request when the rate is
    0 (both 0 when not even one request fits). ``reason`` is empty exactly when
    ``rate_per_s > 0``.
    """

    rate_per_s: float
    batch: int
    ttft_s: float
    tpot_s: float
    reason: str = ""


class _Costs:
    """One request size on one replica: the module's formulas, with decode steps memoised."""

    def __init__(self, perf: ReplicaPerformance, prompt_tokens: int, output_tokens: int) -> None:
        self._perf = perf
        self._context = prompt_tokens + output_tokens // 2
        self._steps: dict[int, float] = {}
        self.prefill_s = perf.prefill_seconds(prompt_tokens)
        self.decode_steps = output_tokens - 1

    def step_s(self, batch: int) -> float:
        if batch not in self._steps:
            self._steps[batch] = self._perf.decode_step_seconds(batch, self._context)
        return self._steps[batch]

    def throughput(self, batch: int) -> float:
        """Closed-loop requests per second with ``batch`` requests always present."""
        return batch / (batch * self.prefill_s + self.decode_steps * self.step_s(batch))

    def tpot_s(self, batch: int, interleaved: float) -> float:
        """TPOT at ``batch`` when ``interleaved`` other prefills fall in the request's decode."""
        if not self.decode_steps:
            return 0.0
        return self.step_s(batch) + interleaved * self.prefill_s / self.decode_steps

    def ttft_s(self, batch: int) -> float:
        """TTFT with no queue: own prefill after the decode step in progress."""
        return self.prefill_s + self.step_s(batch)

    def misses(self, targets: ClassTargets, batch: int, interleaved: int) -> list[str]:
        """A sentence for each target missed at ``batch`` with no queueing (empty: none is)."""
        misses = []
        ttft, tpot = self.ttft_s(batch), self.tpot_s(batch, interleaved)
        if targets.ttft_s is not None and ttft > targets.ttft_s:
            misses.append(f"TTFT {_ms(ttft)}, above the {_ms(targets.ttft_s)} target")
        if targets.tpot_s is not None and tpot > targets.tpot_s:
            misses.append(f"TPOT {_ms(tpot)}, above the {_ms(targets.tpot_s)} target")
        latency = ttft + self.decode_steps * tpot
        if targets.deadline_s is not None and latency > targets.deadline_s:
            misses.append(
                f"a request takes {latency:,.1f} s, beyond the {targets.deadline_s:,.0f} s deadline"
            )
        return misses


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.0f} ms"


def is_latency_class(targets: ClassTargets) -> bool:
    """A class with a TTFT or TPOT target: its rate leaves headroom for random arrivals."""
    return targets.ttft_s is not None or targets.tpot_s is not None


def replica_capacity(
    perf: ReplicaPerformance,
    targets: ClassTargets,
    prompt_tokens: int,
    output_tokens: int,
    max_num_seqs: int,
) -> CapacityPoint:
    """Requests per second of ``prompt_tokens``/``output_tokens`` requests one replica serves
    within ``targets`` (module notes); ``ValueError`` for sizes or a batch limit below 1."""
    if prompt_tokens < 1 or output_tokens < 1 or max_num_seqs < 1:
        raise ValueError("prompt_tokens, output_tokens and max_num_seqs must be >= 1")
    if not perf.fits:
        usable = perf.accelerator.memory_gib * perf.gpu_memory_utilization
        reason = (
            f"the replica does not fit: {perf.weights_gib_per_device:.1f} GiB of weights and "
            f"{perf.reserve_gib_per_device:.1f} GiB of runtime reserve per device, "
            f"{usable:.1f} GiB usable"
        )
        return CapacityPoint(0.0, 0, 0.0, 0.0, reason)
    needed = prompt_tokens + output_tokens
    if needed > perf.kv_capacity_tokens:
        reason = (
            f"a request needs {needed:,} tokens of KV cache, the replica holds "
            f"{perf.kv_capacity_tokens:,}"
        )
        return CapacityPoint(0.0, 0, 0.0, 0.0, reason)
    costs = _Costs(perf, prompt_tokens, output_tokens)
    alone = costs.misses(targets, 1, 0)
    if alone:
        reason = "even alone, " + "; ".join(alone)
        return CapacityPoint(0.0, 0, costs.ttft_s(1), costs.tpot_s(1, 0), reason)
    limit = min(max_num_seqs, perf.kv_capacity_tokens // needed)
    if is_latency_class(targets):
        return _with_headroom(costs, targets, limit)
    peak = _largest(limit, lambda batch: not costs.misses(targets, batch, batch - 1))
    return CapacityPoint(
        costs.throughput(peak), peak, costs.ttft_s(peak), costs.tpot_s(peak, peak - 1)
    )


def _with_headroom(costs: _Costs, targets: ClassTargets, limit: int) -> CapacityPoint:
    """A latency class's point: the peak concurrency and Poisson rate that keep, but for
    ``TAIL_PROBABILITY`` of the time, the concurrency under the peak, the prefills interleaved
    in a request's decode within its TPOT budget and its first-token delay within its TTFT
    budget. Predicted TTFT and TPOT are those tails' quantiles at the chosen rate."""
    top = _largest(limit, lambda batch: not costs.misses(targets, batch, 0))
    throughputs = [costs.throughput(batch) for batch in range(1, limit + 1)]

    @functools.cache
    def occupancy_rate(peak: int) -> float:
        return max_rate(throughputs, peak, TAIL_PROBABILITY)

    @functools.cache
    def rate(peak: int) -> float:
        """The occupancy rate, lowered where the TPOT or TTFT budget binds first."""
        rate = occupancy_rate(peak)
        step = costs.step_s(peak)
        if targets.tpot_s is not None and costs.decode_steps:
            budget = (targets.tpot_s - step) * costs.decode_steps
            prefills = max_poisson_mean(math.floor(budget / costs.prefill_s), TAIL_PROBABILITY)
            rate = min(rate, prefills / (costs.decode_steps * targets.tpot_s))
        if targets.ttft_s is not None:
            budget = targets.ttft_s - costs.prefill_s
            rate = max_first_token_rate(costs.prefill_s, step, budget, TAIL_PROBABILITY, rate)
        return rate

    # The occupancy rate grows with the peak and the budgets' rates shrink: the best peak is
    # the last one where the occupancy binds, or the next.
    crossing = _largest(top, lambda peak: rate(peak) >= occupancy_rate(peak))
    peak = max(range(crossing, min(crossing + 1, top) + 1), key=rate)
    chosen = rate(peak)
    step = costs.step_s(peak)
    delay = first_token_delay_s(chosen, costs.prefill_s, step, TAIL_PROBABILITY)
    mean_tpot = step / (1.0 - chosen * costs.prefill_s)
    interleaved = poisson_quantile(chosen * costs.decode_steps * mean_tpot, TAIL_PROBABILITY)
    return CapacityPoint(
        chosen, peak, costs.prefill_s + max(delay, step), costs.tpot_s(peak, interleaved)
    )


def _largest(limit: int, ok: Callable[[int], bool]) -> int:
    """The largest ``b`` in ``[1, limit]`` with ``ok(b)`` (1 when none), for ``ok`` true then
    false as ``b`` grows."""
    low, high = 1, limit
    while low < high:
        middle = (low + high + 1) // 2
        if ok(middle):
            low = middle
        else:
            high = middle - 1
    return low


@functools.lru_cache(maxsize=16_384)
def capacity_point(
    perf: ReplicaPerformance, targets: ClassTargets, bucket: RequestBucket, max_num_seqs: int
) -> CapacityPoint:
    """``replica_capacity`` at a bucket's sizes, memoised (every argument is an immutable
    value, so the table is keyed by model, hardware, TP, class targets and bucket)."""
    return replica_capacity(perf, targets, bucket.prompt_tokens, bucket.output_tokens, max_num_seqs)


def demand_capacity(
    perf: ReplicaPerformance,
    targets: ClassTargets,
    prompt_tokens: int,
    output_tokens: int,
    max_num_seqs: int,
) -> CapacityPoint:
    """The capacity at a demand's own request size, read off the table: the time per request
    (1/rate) is interpolated bilinearly between the four grid buckets around the size, so a
    demand is neither rated at a bucket up to 50 % larger than it nor recomputed per size.
    Where any of those buckets cannot be served, the rounded-up bucket's point (and reason)
    stands: never more optimistic than the grid."""
    prompt_weights = _weights(prompt_tokens)
    output_weights = _weights(output_tokens)
    upper = capacity_point(
        perf, targets, RequestBucket(max(prompt_weights), max(output_weights)), max_num_seqs
    )
    seconds = 0.0
    for prompt, prompt_weight in prompt_weights.items():
        for output, output_weight in output_weights.items():
            point = capacity_point(perf, targets, RequestBucket(prompt, output), max_num_seqs)
            if point.rate_per_s <= 0:
                return upper
            seconds += prompt_weight * output_weight / point.rate_per_s
    return replace(upper, rate_per_s=1.0 / seconds)


def _weights(tokens: int) -> dict[int, float]:
    """The grid values around ``tokens`` and their linear-interpolation weights."""
    low, high = grid_below(tokens), bucket_tokens(tokens)
    if low == high:
        return {high: 1.0}
    share = (tokens - low) / (high - low)
    return {low: 1.0 - share, high: share}


# ------------------------------------------------------------------------ shapes and config


def demand_sizes(demands: Iterable[ClassDemand]) -> dict[TrafficClass, RequestBucket]:
    """Each class's request size (its demand's mean sizes, not rounded to the grid);
    ``DEFAULT_BUCKET`` for classes without demand."""
    sizes = dict.fromkeys(TrafficClass, DEFAULT_BUCKET)
    for demand in demands:
        sizes[demand.traffic_class] = RequestBucket(demand.prompt_tokens, demand.output_tokens)
    return sizes


def workload_demand(config: GearshiftConfig) -> dict[str, tuple[ClassDemand, ...]]:
    """``config.workload`` as class demand per model (models without entries are absent)."""
    demand: dict[str, list[ClassDemand]] = {}
    for item in config.workload:
        demand.setdefault(item.model, []).append(
            ClassDemand(item.traffic_class, item.rate_per_s, item.prompt_tokens, item.output_tokens)
        )
    return {model: tuple(items) for model, items in demand.items()}


def with_capacity(
    shape: ReplicaShape,
    model: ModelConfig,
    group: NodeGroup,
    config: GearshiftConfig,
    buckets: Mapping[TrafficClass, RequestBucket],
) -> ReplicaShape:
    """``shape`` with its capacity and reasons per class filled in (unchanged if it does not
    fit: its own ``reason`` says why)."""
    if not shape.fits:
        return shape
    points = _shape_points(shape, model, group, config, buckets)
    return replace(
        shape,
        capacity={cls: point.rate_per_s for cls, point in points.items()},
        capacity_reasons={cls: point.reason for cls, point in points.items() if point.reason},
    )


def _shape_points(
    shape: ReplicaShape,
    model: ModelConfig,
    group: NodeGroup,
    config: GearshiftConfig,
    buckets: Mapping[TrafficClass, RequestBucket],
) -> dict[TrafficClass, CapacityPoint]:
    utilization = config.placement.gpu_memory_utilization
    perf = performance(model, group_accelerator(group), shape.tensor_parallel, utilization)
    return {
        cls: demand_capacity(
            perf,
            config.traffic_classes.targets(cls),
            buckets[cls].prompt_tokens,
            buckets[cls].output_tokens,
            model.max_num_seqs,
        )
        for cls in TrafficClass
    }


@dataclass(frozen=True, slots=True)
class CapacityRow:
    """One entry of a config's capacity table, for ``gearshift capacity``."""

    model: str
    group: str
    accelerator: str
    tensor_parallel: int
    traffic_class: TrafficClass
    bucket: RequestBucket
    point: CapacityPoint

    @property
    def output_tokens_per_s(self) -> float:
        return self.point.rate_per_s * self.bucket.output_tokens


def capacity_rows(
    config: GearshiftConfig,
    model: str | None = None,
    demand: Mapping[str, Sequence[ClassDemand]] | None = None,
) -> list[CapacityRow]:
    """Every model (or just ``model``) × node group × fitting TP × class of ``config``, at the
    size of that model's demand per class, interpolated on the table (``config.workload``
    unless ``demand`` is given; ``DEFAULT_BUCKET`` for a class without demand)."""
    demand = workload_demand(config) if demand is None else demand
    utilization = config.placement.gpu_memory_utilization
    rows: list[CapacityRow] = []
    for served in config.models:
        if model is not None and served.name != model:
            continue
        buckets = demand_sizes(demand.get(served.name, ()))
        for group in config.fleet.node_groups:
            for shape in replica_shapes(served, group, utilization):
                if not shape.fits:
                    continue
                points = _shape_points(shape, served, group, config, buckets)
                rows.extend(
                    CapacityRow(
                        served.name,
                        group.name,
                        shape.accelerator,
                        shape.tensor_parallel,
                        cls,
                        buckets[cls],
                        point,
                    )
                    for cls, point in points.items()
                )
    return rows
