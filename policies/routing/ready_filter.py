"""``ready-filter``: keep replicas that are ready; starting or draining ones are "not now"."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from scheduler.framework.plugin import PluginParams, PluginType, Rejection, Verdict
from scheduler.framework.routing import Cycle, EndpointView, Filter, FilterResult, RouteRequest
from scheduler.types import ReplicaState


class ReadyParams(PluginParams):
    """No parameters."""


@dataclass(frozen=True, slots=True)
class ReadyFilter:
    TYPE: ClassVar[str] = "ready-filter"
    name: str
    params: ReadyParams

    def filter(
        self, request: RouteRequest, candidates: Sequence[EndpointView], cycle: Cycle
    ) -> FilterResult:
        kept = tuple(e for e in candidates if e.state is ReplicaState.READY)
        rejected = tuple(
            Rejection(e.replica_id, Verdict.UNFIT, f"replica is {e.state.value}")
            for e in candidates
            if e.state is not ReplicaState.READY
        )
        return FilterResult(kept, rejected)


PLUGIN = PluginType(
    type_name=ReadyFilter.TYPE,
    kind=Filter,
    params=ReadyParams,
    factory=ReadyFilter,
    summary="Keeps ready replicas; starting, draining and failed ones are rejected as not-now.",
)
