"""``yield-to-interactive-filter``: batch work backfills replicas that interactive traffic left
idle and yields those that serve it, so interactive load that returns finds its fast replica
free of new batch work."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from pydantic import Field

from scheduler.framework.plugin import PluginParams, PluginType, Rejection, Verdict
from scheduler.framework.routing import Cycle, EndpointView, Filter, FilterResult, RouteRequest


class YieldParams(PluginParams):
    quiet_s: float | None = Field(
        None,
        ge=0,
        description="A replica that had interactive work in flight less than this many "
        "seconds ago is yielded; unset: the request's class setting "
        "(gateway.admission.<class>.yield_to_interactive_s), no yielding without one.",
    )
    keep_least_busy: bool = Field(
        True,
        description="When every replica is yielded, keep the one interactive traffic left "
        "longest ago instead of none (the work then queues behind interactive work in the "
        "engine's priority order rather than being refused).",
    )


@dataclass(frozen=True, slots=True)
class YieldToInteractiveFilter:
    """Keeps replicas that ``serves_interactive(quiet_s, now)`` says are free of interactive
    work; the rest are ``UNFIT`` (not now)."""

    TYPE: ClassVar[str] = "yield-to-interactive-filter"
    name: str
    params: YieldParams

    def filter(
        self, request: RouteRequest, candidates: Sequence[EndpointView], cycle: Cycle
    ) -> FilterResult:
        quiet = self.params.quiet_s if self.params.quiet_s is not None else request.yield_s
        if quiet is None:
            return FilterResult(tuple(candidates))
        busy = {e.replica_id for e in candidates if e.serves_interactive(quiet, cycle.now)}
        if self.params.keep_least_busy and candidates and len(busy) == len(candidates):
            idle_longest = min(candidates, key=_interactive_recency)
            busy.discard(idle_longest.replica_id)
        kept = tuple(e for e in candidates if e.replica_id not in busy)
        rejected = tuple(
            Rejection(e.replica_id, Verdict.UNFIT, _reason(e, quiet, cycle.now))
            for e in candidates
            if e.replica_id in busy
        )
        return FilterResult(kept, rejected)


def _interactive_recency(endpoint: EndpointView) -> tuple[int, float]:
    until = endpoint.load.interactive_until
    return endpoint.load.interactive, -math.inf if until is None else until


def _reason(endpoint: EndpointView, quiet_s: float, now: float) -> str:
    if endpoint.load.interactive:
        return f"serving {endpoint.load.interactive} interactive requests: batch yields"
    until = endpoint.load.interactive_until
    ago = now - until if until is not None else math.inf
    return f"served interactive work {ago:.1f} s ago (yields for {quiet_s:g} s)"


PLUGIN = PluginType(
    type_name=YieldToInteractiveFilter.TYPE,
    kind=Filter,
    params=YieldParams,
    factory=YieldToInteractiveFilter,
    summary="Batch backfills replicas interactive traffic left idle and yields the busy ones.",
)
