"""``slo-ttft-filter``: skip replicas whose predicted time to first token misses the class's
target, so a class spills to a slower tier only while that tier still meets its SLO."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from pydantic import Field

from scheduler.framework.plugin import PluginParams, PluginType, Rejection, Verdict
from scheduler.framework.routing import Cycle, EndpointView, Filter, FilterResult, RouteRequest


class SloTtftParams(PluginParams):
    ttft_s: float | None = Field(
        None,
        gt=0,
        description="TTFT target, seconds; unset: the request's class target "
        "(traffic_classes.<class>.ttft_s), and no filtering for a class without one.",
    )
    keep_fastest: bool = Field(
        True,
        description="When no replica meets the target, keep the fastest instead of none "
        "(a late answer beats a 503).",
    )


@dataclass(frozen=True, slots=True)
class SloTtftFilter:
    """Keeps replicas with ``predicted_ttft_s(prompt) <= target`` (the prediction the
    ``predicted-ttft-scorer`` ranks by); the rest are ``UNFIT`` (not now)."""

    TYPE: ClassVar[str] = "slo-ttft-filter"
    name: str
    params: SloTtftParams

    def filter(
        self, request: RouteRequest, candidates: Sequence[EndpointView], cycle: Cycle
    ) -> FilterResult:
        goal = self.params.ttft_s if self.params.ttft_s is not None else request.ttft_target_s
        if goal is None:
            return FilterResult(tuple(candidates))
        ttft = {e.replica_id: e.predicted_ttft_s(request.prompt_tokens) for e in candidates}
        target = goal
        if self.params.keep_fastest and candidates and min(ttft.values()) > target:
            target = min(ttft.values())
        kept = tuple(e for e in candidates if ttft[e.replica_id] <= target)
        rejected = tuple(
            Rejection(
                e.replica_id,
                Verdict.UNFIT,
                f"predicted TTFT {ttft[e.replica_id]:.3f} s exceeds the {goal:g} s target",
            )
            for e in candidates
            if ttft[e.replica_id] > target
        )
        return FilterResult(kept, rejected)


PLUGIN = PluginType(
    type_name=SloTtftFilter.TYPE,
    kind=Filter,
    params=SloTtftParams,
    factory=SloTtftFilter,
    summary="Skips replicas predicted to miss the class's time-to-first-token target.",
)
