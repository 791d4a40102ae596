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
    """Score = 1 − outstanding ÷ (max_num_seqs + queued), so 1 when idle, → 0 when swamped."""

    TYPE: ClassVar[str] = "queue-depth-scorer"
    name: str
    params: QueueDepthParams

    def score(
        self, request: RouteRequest, candidates: Sequence[EndpointView], cycle: Cycle
    ) -> Mapping[str, float]:
        return {
            e.replica_id: 1.0 - e.outstanding / (e.perf.max_num_seqs + e.queued) for e in candidates
        }


PLUGIN = PluginType(
    type_name=QueueDepthScorer.TYPE,
    kind=Scorer,
    params=QueueDepthParams,
    factory=QueueDepthScorer,
    summary="Prefers replicas with fewer outstanding requests relative to their batch size.",
)
