"""``queue-depth-scorer``: prefer replicas with fewer outstanding requests per batch slot."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

from scheduler.framework.plugin import PluginParams, PluginType
from scheduler.framework.routing import Cycle, EndpointView, RouteRequest, Scorer


class QueueDepthParams(PluginParams):
    """No parameters."""


@dataclass(frozen=True, slots=True)
class QueueDepthScorer:
    """Score = batch slots ÷ (batch slots + outstanding): 1 when idle, ½ when every slot is
    busy, and still falling as the queue grows (so 1 waiting beats 50)."""

    TYPE: ClassVar[str] = "queue-depth-scorer"
    name: str
    params: QueueDepthParams

    def score(
        self, request: RouteRequest, candidates: Sequence[EndpointView], cycle: Cycle
    ) -> Mapping[str, float]:
        return {
            e.replica_id: e.perf.max_num_seqs / (e.perf.max_num_seqs + e.outstanding)
            for e in candidates
        }


PLUGIN = PluginType(
    type_name=QueueDepthScorer.TYPE,
    kind=Scorer,
    params=QueueDepthParams,
    factory=QueueDepthScorer,
    summary="Prefers replicas with fewer outstanding requests relative to their batch size.",
)
