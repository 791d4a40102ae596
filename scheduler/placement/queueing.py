"""Queueing approximations behind capacity tables: how far random arrivals push one replica.

Three tails, each held to a small probability ``ε`` by the rate they allow:

* **Occupancy** (``max_rate``). A replica running ``n`` requests completes ``X(n)`` of them per
  second (its closed-loop throughput, growing with ``n`` up to its batch limit and flat beyond,
  where requests queue). Under Poisson arrivals at rate ``λ`` the number present is the
  birth-death chain ``π(n) ∝ Π_{k ≤ n} λ / X(k)``. With ``X(n) = n / L`` that is the Poisson
  occupancy of an M/G/∞ queue (square-root staffing); with a flat ``X``, an M/M/1 queue.
* **Interleaved prefills** (``max_poisson_mean``). Every request admitted while another decodes
  stalls it for one prefill pass; arrivals are Poisson, so a request decoding for ``D`` seconds
  sees ``Poisson(λ·D)`` of them.
* **First-token delay** (``first_token_delay_tail``). Admission is batched, as in the simulator
  and vLLM: a request arriving during a prefill pass waits for the rest of it (uniform over the
  pass) and the decode step after it, then shares one pass with everyone else who arrived in
  the meantime. The pass in progress is picked by time, so its group size is length-weighted;
  groups gather over the previous cycle, a Poisson count given at least one arrival. Arriving
  during a decode step costs the rest of the step and the prefills of those arriving in it.

Pure functions of numbers; inputs are validated by the caller (``capacity``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np

_BISECTIONS = 48


def occupancy_tail(rate: float, throughputs: Sequence[float], peak: int) -> float:
    """``P(N > peak)`` for Poisson arrivals at ``rate`` on a server that completes
    ``throughputs[n - 1]`` requests per second with ``n`` present (the last value beyond it);
    1.0 from ``rate >= throughputs[-1]``, where the queue grows without bound."""
    return _Occupancy(throughputs).tail(rate, peak)


class _Occupancy:
    """The birth-death chain of ``occupancy_tail``, its cumulative log-throughputs cached."""

    def __init__(self, throughputs: Sequence[float]) -> None:
        self._last = math.log(throughputs[-1])
        self._states = np.arange(len(throughputs) + 1, dtype=float)
        self._cumulative = np.concatenate(([0.0], np.cumsum(np.log(throughputs))))

    def tail(self, rate: float, peak: int) -> float:
        if rate <= 0:
            return 0.0
        log_rate = math.log(rate)
        ratio = math.exp(log_rate - self._last)
        if ratio >= 1.0:
            return 1.0
        logs = self._states * log_rate - self._cumulative
        weights = np.exp(logs - logs.max())
        limit = len(weights) - 1
        beyond = float(weights[limit]) * ratio / (1.0 - ratio)
        if peak < limit:
            above = float(weights[peak + 1 :].sum()) + beyond
        else:
            above = float(weights[limit]) * ratio ** (peak - limit + 1) / (1.0 - ratio)
        return above / (float(weights.sum()) + beyond)


def max_rate(throughputs: Sequence[float], peak: int, tail: float) -> float:
    """The largest Poisson rate at which ``P(N > peak) <= tail`` (``occupancy_tail``);
    grows with ``peak`` and with every throughput."""
    chain = _Occupancy(throughputs)
    low, high = 0.0, throughputs[-1]
    for _ in range(_BISECTIONS):
        middle = (low + high) / 2
        if chain.tail(middle, peak) <= tail:
            low = middle
        else:
            high = middle
    return low


def first_token_delay_tail(rate: float, prefill_s: float, step_s: float, budget_s: float) -> float:
    """``P(D > budget_s)``: how often the delay other work adds to a request's own prefill
    exceeds ``budget_s`` under batched admission (module notes), for Poisson arrivals at
    ``rate`` of requests whose prefill takes ``prefill_s`` between decode steps of ``step_s``.
    Grows with ``rate``, shrinks as ``budget_s`` grows."""
    if budget_s < 0:
        return 1.0
    busy = rate * prefill_s
    if busy >= 1.0:
        return 1.0
    if rate <= 0:
        return 0.0
    # The pass in progress, picked by time: its group gathered over the previous cycle, so its
    # size is Poisson given at least one, weighted by its length.
    gathered = rate * (prefill_s + step_s) / (1.0 - busy)
    at_least_one = -math.expm1(-gathered)
    mean_group = gathered / at_least_one
    in_pass, covered = 0.0, 0.0
    mass = math.exp(-gathered)
    for size in range(1, _MAX_COUNT):
        mass *= gathered / size
        share = size * mass / at_least_one / mean_group
        length = size * prefill_s
        in_pass += share * _delay_tail(rate, length, step_s, step_s, prefill_s, budget_s)
        covered += share
        if covered >= 1.0 - _NEGLIGIBLE:
            break
    in_step = _delay_tail(rate, step_s, 0.0, 0.0, prefill_s, budget_s)
    return busy * in_pass + (1.0 - busy) * in_step


_MAX_COUNT = 100_000
_NEGLIGIBLE = 1e-12


def _delay_tail(
    rate: float, length: float, after: float, fixed: float, prefill_s: float, budget_s: float
) -> float:
    """``P(R + fixed + A·prefill_s > budget_s)`` for ``R ~ U(0, length)`` (the phase in progress)
    and ``A ~ Poisson(rate·(length + after))`` (the requests admitted along with this one)."""
    mean = rate * (length + after)
    total, seen = 0.0, 0.0
    mass = math.exp(-mean)
    for count in range(_MAX_COUNT):
        if count:
            mass *= mean / count
        left = budget_s - fixed - count * prefill_s
        if left < 0:
            return total + max(0.0, 1.0 - seen)
        if length > left:
            total += mass * (length - left) / length
        seen += mass
        if seen >= 1.0 - _NEGLIGIBLE and count > mean:
            break
    return total


def max_first_token_rate(
    prefill_s: float, step_s: float, budget_s: float, tail: float, ceiling: float
) -> float:
    """The largest rate up to ``ceiling`` whose ``first_token_delay_tail`` is at most ``tail``
    (0 when even a lone request misses the budget)."""
    if budget_s < 0:
        return 0.0
    ceiling = min(ceiling, 1.0 / prefill_s)
    if first_token_delay_tail(ceiling, prefill_s, step_s, budget_s) <= tail:
        return ceiling
    low, high = 0.0, ceiling
    for _ in range(_BISECTIONS):
        middle = (low + high) / 2
        if first_token_delay_tail(middle, prefill_s, step_s, budget_s) <= tail:
            low = middle
        else:
            high = middle
    return low


def first_token_delay_s(rate: float, prefill_s: float, step_s: float, tail: float) -> float:
    """The ``1 - tail`` quantile of the delay ``first_token_delay_tail`` describes."""
    if first_token_delay_tail(rate, prefill_s, step_s, 0.0) <= tail:
        return 0.0
    low, high = 0.0, prefill_s
    while first_token_delay_tail(rate, prefill_s, step_s, high) > tail:
        low, high = high, high * 2
        if high > 1e6:
            return math.inf
    for _ in range(_BISECTIONS):
        middle = (low + high) / 2
        if first_token_delay_tail(rate, prefill_s, step_s, middle) <= tail:
            high = middle
        else:
            low = middle
    return high


def poisson_tail(mean: float, count: int) -> float:
    """``P(N > count)`` for ``N ~ Poisson(mean)``; summed in log space, so any mean works."""
    if count < 0:
        return 1.0
    if mean <= 0:
        return 0.0
    # Terms by recurrence from the mode down and up, scaled by the mode's term.
    mode = min(count, math.floor(mean))
    log_mode = mode * math.log(mean) - mean - math.lgamma(mode + 1)
    at_most, term = 1.0, 1.0
    for k in range(mode, 0, -1):
        term *= k / mean
        at_most += term
        if term < 1e-17 * at_most:
            break
    term = 1.0
    for k in range(mode + 1, count + 1):
        term *= mean / k
        at_most += term
    return max(0.0, 1.0 - math.exp(log_mode) * at_most)


@functools.lru_cache(maxsize=4096)
def max_poisson_mean(count: int, tail: float) -> float:
    """The largest mean with ``P(N > count) <= tail``; grows with ``count`` (0 below 0)."""
    if count < 0:
        return 0.0
    low, high = 0.0, count + 10.0 * math.sqrt(count + 1) + 10.0
    for _ in range(_BISECTIONS):
        middle = (low + high) / 2
        if poisson_tail(middle, count) <= tail:
            low = middle
        else:
            high = middle
    return low


def poisson_quantile(mean: float, tail: float) -> int:
    """The smallest ``count`` with ``P(N > count) <= tail`` for ``N ~ Poisson(mean)``."""
    count = max(0, math.floor(mean))
    while poisson_tail(mean, count) > tail:
        count += 1
    return count
