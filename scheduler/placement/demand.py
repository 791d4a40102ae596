"""``DemandTracker``: the request rates the gateway observes, per model and class.

An exponentially decayed count per (model, class): each request adds 1, and the count decays
with half-life H, so under a steady rate λ it settles at λ·H/ln 2 and ``rate = count·ln 2/H``
estimates λ, forgetting old traffic at the configured pace. Request sizes are decayed means
with the same weights. Pure: the caller passes the clock.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from scheduler.framework.placement import ClassDemand
from scheduler.types import TrafficClass


@dataclass(slots=True)
class _Decayed:
    count: float = 0.0
    prompt_sum: float = 0.0
    output_sum: float = 0.0
    at: float = 0.0

    def decay_to(self, now: float, half_life_s: float) -> None:
        if now > self.at:
            factor = math.exp(-math.log(2) * (now - self.at) / half_life_s)
            self.count *= factor
            self.prompt_sum *= factor
            self.output_sum *= factor
            self.at = now


class DemandTracker:
    """Decayed request rates and mean sizes per (model, class)."""

    def __init__(self, half_life_s: float) -> None:
        if half_life_s <= 0:
            raise ValueError("half_life_s must be > 0")
        self._half_life_s = half_life_s
        self._series: dict[tuple[str, TrafficClass], _Decayed] = {}

    def observe(
        self,
        model: str,
        traffic_class: TrafficClass,
        prompt_tokens: int,
        output_tokens: int,
        now: float,
    ) -> None:
        series = self._series.setdefault((model, traffic_class), _Decayed(at=now))
        series.decay_to(now, self._half_life_s)
        series.count += 1.0
        series.prompt_sum += prompt_tokens
        series.output_sum += output_tokens

    def snapshot(self, now: float) -> dict[str, tuple[ClassDemand, ...]]:
        """Per model, the demand of each class seen (rate in requests per second)."""
        per_model: dict[str, list[ClassDemand]] = {}
        for (model, traffic_class), series in sorted(self._series.items()):
            series.decay_to(now, self._half_life_s)
            if series.count <= 0:
                continue
            per_model.setdefault(model, []).append(
                ClassDemand(
                    traffic_class=traffic_class,
                    rate_per_s=series.count * math.log(2) / self._half_life_s,
                    prompt_tokens=max(1, round(series.prompt_sum / series.count)),
                    output_tokens=max(1, round(series.output_sum / series.count)),
                )
            )
        return {model: tuple(classes) for model, classes in per_model.items()}


def combine(
    reports: Mapping[str, Mapping[str, tuple[ClassDemand, ...]]],
) -> dict[str, tuple[ClassDemand, ...]]:
    """Sum the demand several gateways report (keyed by gateway): rates add, sizes are
    rate-weighted means."""
    totals: dict[tuple[str, TrafficClass], list[ClassDemand]] = {}
    for report in reports.values():
        for model, classes in report.items():
            for demand in classes:
                totals.setdefault((model, demand.traffic_class), []).append(demand)
    combined: dict[str, list[ClassDemand]] = {}
    for (model, traffic_class), parts in sorted(totals.items()):
        rate = sum(part.rate_per_s for part in parts)
        if rate <= 0:
            continue
        prompt = sum(part.prompt_tokens * part.rate_per_s for part in parts) / rate
        output = sum(part.output_tokens * part.rate_per_s for part in parts) / rate
        combined.setdefault(model, []).append(
            ClassDemand(traffic_class, rate, max(1, round(prompt)), max(1, round(output)))
        )
    return {model: tuple(classes) for model, classes in combined.items()}
