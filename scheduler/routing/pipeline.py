"""``RoutingProfile.run``: filter → score → pick, the one place that clamps, weights and times.

Invariants: plugins never see an empty candidate list (the pipeline stops first); scores are
clamped to [0, 1] before weighting; every endpoint dropped carries a ``Rejection``; the
decision records per-plugin scores and durations so ``explain`` can show why.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from scheduler.errors import InvalidRequest, NoCapacity
from scheduler.framework.plugin import Rejection, Verdict
from scheduler.framework.routing import (
    Cycle,
    EndpointView,
    Filter,
    Picker,
    RouteRequest,
    Scored,
    Scorer,
)


@dataclass(frozen=True, slots=True)
class WeightedScorer:
    scorer: Scorer
    weight: float


@dataclass(frozen=True, slots=True)
class RoutingDecision:
    """The outcome of one routing cycle, complete enough to explain."""

    profile: str
    picks: tuple[str, ...]
    rejections: tuple[Rejection, ...]
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    """scorer instance name → replica id → clamped score."""
    totals: dict[str, float] = field(default_factory=dict)
    durations_s: dict[str, float] = field(default_factory=dict)
    """plugin instance name → seconds spent."""

    def raise_if_empty(self, retry_after_s: float) -> None:
        """Turn "nothing eligible" into the right domain error (never an internal error)."""
        if self.picks:
            return
        reasons = "; ".join(f"{r.subject}: {r.reason}" for r in self.rejections[:4])
        if self.rejections and all(r.verdict is Verdict.UNRESOLVABLE for r in self.rejections):
            first = self.rejections[0]
            raise InvalidRequest(first.reason, code=first.code)
        raise NoCapacity(
            f"No replica can take this request now ({reasons or 'no replica is ready'}).",
            retry_after_s=retry_after_s,
        )


@dataclass(frozen=True, slots=True)
class RoutingProfile:
    """One traffic class's pipeline."""

    name: str
    filters: tuple[Filter, ...]
    scorers: tuple[WeightedScorer, ...]
    picker: Picker

    def run(
        self, request: RouteRequest, candidates: Sequence[EndpointView], cycle: Cycle
    ) -> RoutingDecision:
        durations: dict[str, float] = {}
        rejections: list[Rejection] = []
        kept: tuple[EndpointView, ...] = tuple(candidates)
        for plugin in self.filters:
            if not kept:
                break
            started = time.perf_counter()
            result = plugin.filter(request, kept, cycle)
            durations[plugin.name] = time.perf_counter() - started
            kept_ids = {endpoint.replica_id for endpoint in result.kept}
            rejections.extend(
                Rejection(r.subject, r.verdict, r.reason, r.plugin or plugin.name, r.code)
                for r in result.rejected
            )
            kept = tuple(endpoint for endpoint in kept if endpoint.replica_id in kept_ids)
        if not kept:
            return RoutingDecision(self.name, (), tuple(rejections), durations_s=durations)

        scores: dict[str, dict[str, float]] = {}
        totals = {endpoint.replica_id: 0.0 for endpoint in kept}
        for weighted in self.scorers:
            started = time.perf_counter()
            raw = weighted.scorer.score(request, kept, cycle)
            durations[weighted.scorer.name] = time.perf_counter() - started
            clamped = {rid: min(1.0, max(0.0, raw.get(rid, 0.0))) for rid in totals}
            scores[weighted.scorer.name] = clamped
            for rid, value in clamped.items():
                totals[rid] += weighted.weight * value

        ranked = sorted(
            (Scored(endpoint, totals[endpoint.replica_id]) for endpoint in kept),
            key=lambda scored: (-scored.score, scored.endpoint.replica_id),
        )
        started = time.perf_counter()
        picks = self.picker.pick(request, ranked, cycle)
        durations[self.picker.name] = time.perf_counter() - started
        return RoutingDecision(
            self.name, tuple(picks), tuple(rejections), scores, totals, durations
        )
