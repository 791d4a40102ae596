"""``round-robin-picker``: take turns among the best-scored replicas, by the cycle's sequence.

Replicas whose totals tie (within ``tie_epsilon`` of their group's best) form a group, groups
stay in score order, and each group is rotated by the cycle's ``sequence``: the n-th request
of a model goes to the (n mod size)-th replica of the top group, in replica-id order. Without
scorers every replica ties, so this is plain round robin. Deterministic given the cycle: a
router that does not count requests (``sequence`` None) gets a turn drawn from the cycle's RNG.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from pydantic import Field

from policies.routing.ties import tie_groups
from scheduler.framework.plugin import PluginParams, PluginType
from scheduler.framework.routing import Cycle, Picker, RouteRequest, Scored

_RANDOM_TURNS = 1 << 30
"""Range of the turn drawn when the cycle carries no sequence number."""


class RoundRobinParams(PluginParams):
    fallbacks: int = Field(
        2, ge=0, le=16, description="Extra replicas to try, in order, before the first byte."
    )
    tie_epsilon: float = Field(
        1e-9, ge=0, description="Scores closer than this count as a tie (they take turns)."
    )


@dataclass(frozen=True, slots=True)
class RoundRobinPicker:
    TYPE: ClassVar[str] = "round-robin-picker"
    name: str
    params: RoundRobinParams

    def pick(
        self, request: RouteRequest, ranked: Sequence[Scored], cycle: Cycle
    ) -> tuple[str, ...]:
        groups = tie_groups(ranked, self.params.tie_epsilon)
        turn = cycle.sequence
        if turn is None:
            turn = cycle.rng.randrange(_RANDOM_TURNS)
        ordered: list[str] = []
        for group in groups:
            group.sort()
            offset = turn % len(group)
            ordered.extend(group[offset:] + group[:offset])
        return tuple(ordered[: 1 + self.params.fallbacks])


PLUGIN = PluginType(
    type_name=RoundRobinPicker.TYPE,
    kind=Picker,
    params=RoundRobinParams,
    factory=RoundRobinPicker,
    summary="Takes turns among the best-scored replicas by the cycle's sequence number.",
)
