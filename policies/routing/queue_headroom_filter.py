"""``queue-headroom-filter``: skip replicas with too many requests already queued."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from pydantic import Field

from scheduler.framework.plugin import PluginParams, PluginType, Rejection, Verdict
from scheduler.framework.routing import Cycle, EndpointView, Filter, FilterResult, RouteRequest


class QueueHeadroomParams(PluginParams):
    max_queued: int = Field(
        8, ge=0, description="Requests waiting for a batch slot at which a replica is skipped."
    )


@dataclass(frozen=True, slots=True)
class QueueHeadroomFilter:
    TYPE: ClassVar[str] = "queue-headroom-filter"
    name: str
    params: QueueHeadroomParams

    def filter(
        self, request: RouteRequest, candidates: Sequence[EndpointView], cycle: Cycle
    ) -> FilterResult:
        kept = tuple(e for e in candidates if e.queued < self.params.max_queued)
        rejected = tuple(
            Rejection(
                e.replica_id,
                Verdict.UNFIT,
                f"{e.queued} requests queued (limit {self.params.max_queued})",
            )
            for e in candidates
            if e.queued >= self.params.max_queued
        )
        return FilterResult(kept, rejected)


PLUGIN = PluginType(
    type_name=QueueHeadroomFilter.TYPE,
    kind=Filter,
    params=QueueHeadroomParams,
    factory=QueueHeadroomFilter,
    summary="Skips replicas that already queue max_queued requests (headroom for batch work).",
)
