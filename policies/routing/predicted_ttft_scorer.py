"""``predicted-ttft-scorer``: prefer the replica predicted to return the first token soonest."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

from scheduler.framework.plugin import PluginParams, PluginType
from scheduler.framework.routing import Cycle, EndpointView, RouteRequest, Scorer


class PredictedTtftParams(PluginParams):
    """No parameters."""


@dataclass(frozen=True, slots=True)
class PredictedTtftScorer:
    """Score = fastest predicted TTFT among candidates ÷ this replica's predicted TTFT."""

    TYPE: ClassVar[str] = "predicted-ttft-scorer"
    name: str
    params: PredictedTtftParams

    def score(
        self, request: RouteRequest, candidates: Sequence[EndpointView], cycle: Cycle
    ) -> Mapping[str, float]:
        ttft = {e.replica_id: e.predicted_ttft_s(request.prompt_tokens) for e in candidates}
        best = min(ttft.values())
        return {rid: best / value if value > 0 else 1.0 for rid, value in ttft.items()}


PLUGIN = PluginType(
    type_name=PredictedTtftScorer.TYPE,
    kind=Scorer,
    params=PredictedTtftParams,
    factory=PredictedTtftScorer,
    summary="Prefers the lowest predicted time to first token (queue ahead + prefill speed).",
)
