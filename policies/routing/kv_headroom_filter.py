"""``kv-headroom-filter``: skip replicas whose KV cache is full and already have a queue."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from pydantic import Field

from scheduler.framework.plugin import PluginParams, PluginType, Rejection, Verdict
from scheduler.framework.routing import Cycle, EndpointView, Filter, FilterResult, RouteRequest


class KvHeadroomParams(PluginParams):
    max_kv_usage: float = Field(
        0.95,
        gt=0,
        le=1,
        description="KV-cache usage at or above which a replica with a waiting queue is skipped.",
    )


@dataclass(frozen=True, slots=True)
class KvHeadroomFilter:
    TYPE: ClassVar[str] = "kv-headroom-filter"
    name: str
    params: KvHeadroomParams

    def filter(
        self, request: RouteRequest, candidates: Sequence[EndpointView], cycle: Cycle
    ) -> FilterResult:
        kept: list[EndpointView] = []
        rejected: list[Rejection] = []
        for endpoint in candidates:
            full = endpoint.load.kv_usage >= self.params.max_kv_usage and endpoint.load.waiting
            if not full:
                kept.append(endpoint)
                continue
            rejected.append(
                Rejection(
                    endpoint.replica_id,
                    Verdict.UNFIT,
                    f"KV cache {endpoint.load.kv_usage:.0%} full with "
                    f"{endpoint.load.waiting} waiting",
                )
            )
        return FilterResult(tuple(kept), tuple(rejected))


PLUGIN = PluginType(
    type_name=KvHeadroomFilter.TYPE,
    kind=Filter,
    params=KvHeadroomParams,
    factory=KvHeadroomFilter,
    summary="Skips replicas whose KV cache is full and that already queue requests.",
)
