"""What a simulation measured: per-class latency and SLO attainment, fleet cost and utilization.

Percentiles are nearest-rank over completed requests. A request meets its SLO when it completed
and every target its class sets holds: TTFT ≤ ``ttft_s``, TPOT ≤ ``tpot_s`` (vacuous for a
one-token output) and arrival-to-finish ≤ ``deadline_s``. Rejected requests never meet it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from scheduler.config import ClassTargets
from scheduler.simulator.trace import TraceRequest
from scheduler.types import TrafficClass


@dataclass(frozen=True, slots=True)
class RequestOutcome:
    """One request's fate: where it ran and when its first and last tokens came, or why not."""

    request: TraceRequest
    replica_id: str | None = None
    first_token_at: float | None = None
    finished_at: float | None = None
    rejection: str | None = None
    """Short key of why it was refused (``no_replica``, ``routing:<plugin>/<code>``, ...)."""
    rejection_detail: str = ""
    """The sentence an operator reads."""

    @property
    def completed(self) -> bool:
        return self.finished_at is not None

    @property
    def ttft_s(self) -> float | None:
        if self.first_token_at is None:
            return None
        return self.first_token_at - self.request.arrived_at

    @property
    def tpot_s(self) -> float | None:
        """Mean seconds per output token after the first; None with fewer than two tokens."""
        if self.first_token_at is None or self.finished_at is None:
            return None
        if self.request.output_tokens < 2:
            return None
        return (self.finished_at - self.first_token_at) / (self.request.output_tokens - 1)

    def meets(self, targets: ClassTargets) -> bool:
        ttft, tpot, finished = self.ttft_s, self.tpot_s, self.finished_at
        if ttft is None or finished is None:
            return False
        if targets.ttft_s is not None and ttft > targets.ttft_s:
            return False
        if targets.tpot_s is not None and tpot is not None and tpot > targets.tpot_s:
            return False
        latency = finished - self.request.arrived_at
        return targets.deadline_s is None or latency <= targets.deadline_s


@dataclass(frozen=True, slots=True)
class ClassReport:
    """One traffic class's requests, latencies and SLO attainment."""

    requests: int
    completed: int
    rejected: int
    rejections: Mapping[str, int]
    """rejection reason → requests."""
    ttft_p50_s: float | None
    ttft_p99_s: float | None
    tpot_p50_s: float | None
    tpot_p99_s: float | None
    slo_attainment: float | None
    """Fraction of the class's requests meeting its targets; None without requests."""
    output_tokens: int
    """Output tokens of completed requests."""
    tokens_within_slo: int


@dataclass(frozen=True, slots=True)
class SimulationReport:
    """The outcome of one simulated run; ``to_dict`` gives the JSON-ready summary."""

    classes: Mapping[TrafficClass, ClassReport]
    cost_per_hour: float
    simulated_s: float
    cost_total: float
    cost_per_million_slo_tokens: float | None
    utilization: Mapping[str, float]
    """accelerator type → busy accelerator-seconds / accelerator-seconds."""
    tokens_generated: int
    outcomes: tuple[RequestOutcome, ...] = field(repr=False, default=())

    def to_dict(self) -> dict[str, Any]:
        return {
            "classes": {
                cls.value: {
                    "requests": c.requests,
                    "completed": c.completed,
                    "rejected": c.rejected,
                    "rejections": dict(c.rejections),
                    "ttft_p50_s": c.ttft_p50_s,
                    "ttft_p99_s": c.ttft_p99_s,
                    "tpot_p50_s": c.tpot_p50_s,
                    "tpot_p99_s": c.tpot_p99_s,
                    "slo_attainment": c.slo_attainment,
                    "output_tokens": c.output_tokens,
                    "tokens_within_slo": c.tokens_within_slo,
                }
                for cls, c in self.classes.items()
            },
            "fleet": {
                "cost_per_hour": self.cost_per_hour,
                "simulated_s": self.simulated_s,
                "cost_total": self.cost_total,
                "cost_per_million_slo_tokens": self.cost_per_million_slo_tokens,
                "utilization": dict(self.utilization),
                "tokens_generated": self.tokens_generated,
            },
        }


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in (0, 1]); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def class_report(outcomes: Sequence[RequestOutcome], targets: ClassTargets) -> ClassReport:
    done = [o for o in outcomes if o.completed]
    ttfts = [t for o in done if (t := o.ttft_s) is not None]
    tpots = [t for o in done if (t := o.tpot_s) is not None]
    meeting = [o for o in done if o.meets(targets)]
    reasons = Counter(o.rejection for o in outcomes if o.rejection is not None)
    return ClassReport(
        requests=len(outcomes),
        completed=len(done),
        rejected=sum(reasons.values()),
        rejections=dict(sorted(reasons.items())),
        ttft_p50_s=percentile(ttfts, 0.5),
        ttft_p99_s=percentile(ttfts, 0.99),
        tpot_p50_s=percentile(tpots, 0.5),
        tpot_p99_s=percentile(tpots, 0.99),
        slo_attainment=len(meeting) / len(outcomes) if outcomes else None,
        output_tokens=sum(o.request.output_tokens for o in done),
        tokens_within_slo=sum(o.request.output_tokens for o in meeting),
    )
