"""Which traffic class a key's request runs in: requested, or the key's default; never higher
than asked, and only a class the key may use.

Classes rank interactive > standard > batch. A request for a class the key may not use is
downgraded to the best allowed class below it; when there is none, it is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

from scheduler.types import TrafficClass

RANK: tuple[TrafficClass, ...] = (
    TrafficClass.INTERACTIVE,
    TrafficClass.STANDARD,
    TrafficClass.BATCH,
)
"""Best first."""


@dataclass(frozen=True, slots=True)
class ClassDecision:
    """``used`` is None when the key may use no class at or below ``requested``."""

    requested: TrafficClass
    used: TrafficClass | None

    @property
    def downgraded(self) -> bool:
        return self.used is not None and self.used is not self.requested


def resolve_class(
    requested: TrafficClass | None, allowed: frozenset[TrafficClass], default: TrafficClass
) -> ClassDecision:
    """The class to use. No request → ``default``; never a class better than the request."""
    wanted = default if requested is None else requested
    for candidate in RANK[RANK.index(wanted) :]:
        if candidate in allowed:
            return ClassDecision(wanted, candidate)
    return ClassDecision(wanted, None)
