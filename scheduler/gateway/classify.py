"""Which traffic class a request belongs to (tenant policy joins this in a later release)."""

from __future__ import annotations

from scheduler.types import ServiceTier, TrafficClass

_CLASS_FOR_TIER: dict[ServiceTier, TrafficClass] = {
    ServiceTier.PRIORITY: TrafficClass.INTERACTIVE,
    ServiceTier.DEFAULT: TrafficClass.STANDARD,
    ServiceTier.AUTO: TrafficClass.STANDARD,
    ServiceTier.FLEX: TrafficClass.BATCH,
}


def classify(tier: ServiceTier) -> TrafficClass:
    """``priority`` → interactive, ``default``/``auto`` → standard, ``flex`` → batch."""
    return _CLASS_FOR_TIER[tier]
