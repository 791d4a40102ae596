"""``cost-per-token-scorer``: prefer the replica whose generated tokens cost the least."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

from pydantic import Field

from scheduler.framework.plugin import PluginParams, PluginType
from scheduler.framework.routing import Cycle, EndpointView, RouteRequest, Scorer


class CostPerTokenParams(PluginParams):
    reference_batch: int = Field(
        8,
        ge=1,
        le=4096,
        description="Batch size at which each replica's $/token is compared: a typical "
        "operating point, not the replica's current load.",
    )


@dataclass(frozen=True, slots=True)
class CostPerTokenScorer:
    """Score = cheapest $/token among candidates ÷ this replica's $/token."""

    TYPE: ClassVar[str] = "cost-per-token-scorer"
    name: str
    params: CostPerTokenParams

    def score(
        self, request: RouteRequest, candidates: Sequence[EndpointView], cycle: Cycle
    ) -> Mapping[str, float]:
        cost = {e.replica_id: e.cost_per_token(self.params.reference_batch) for e in candidates}
        cheapest = min(cost.values())
        return {rid: cheapest / value if value > 0 else 1.0 for rid, value in cost.items()}


PLUGIN = PluginType(
    type_name=CostPerTokenScorer.TYPE,
    kind=Scorer,
    params=CostPerTokenParams,
    factory=CostPerTokenScorer,
    summary="Prefers the lowest $ per generated token (node price ÷ predicted decode rate).",
)
