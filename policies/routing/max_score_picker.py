"""``max-score-picker``: the best-scored replica first, then fallbacks; ties broken by the RNG."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from pydantic import Field

from policies.routing.ties import tie_groups
from scheduler.framework.plugin import PluginParams, PluginType
from scheduler.framework.routing import Cycle, Picker, RouteRequest, Scored


class MaxScoreParams(PluginParams):
    fallbacks: int = Field(
        2, ge=0, le=16, description="Extra replicas to try, in order, before the first byte."
    )
    tie_epsilon: float = Field(
        1e-9, ge=0, description="Scores closer than this count as a tie (shuffled)."
    )


@dataclass(frozen=True, slots=True)
class MaxScorePicker:
    TYPE: ClassVar[str] = "max-score-picker"
    name: str
    params: MaxScoreParams

    def pick(
        self, request: RouteRequest, ranked: Sequence[Scored], cycle: Cycle
    ) -> tuple[str, ...]:
        # Equal scores (within tie_epsilon of the group's best) are shuffled, so load spreads
        # across identical replicas instead of piling onto the first id.
        groups = tie_groups(ranked, self.params.tie_epsilon)
        ordered: list[str] = []
        for group in groups:
            cycle.rng.shuffle(group)
            ordered.extend(group)
        return tuple(ordered[: 1 + self.params.fallbacks])


PLUGIN = PluginType(
    type_name=MaxScorePicker.TYPE,
    kind=Picker,
    params=MaxScoreParams,
    factory=MaxScorePicker,
    summary="Picks the highest total score (random among ties) plus ordered fallbacks.",
)
