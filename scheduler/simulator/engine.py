"""A heap of timed actions run in virtual time: the simulator's only clock.

Invariants: actions run in (time, scheduling order) order; time never goes backwards (an
action scheduled in the past is a bug and raises); nothing here reads the wall clock.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable

Action = Callable[[float], None]
"""Called with the virtual time at which it was scheduled."""


class EventLoop:
    """Runs scheduled actions in time order until none are left."""

    def __init__(self, *, on_event: Action | None = None) -> None:
        self._heap: list[tuple[float, int, Action]] = []
        self._order = itertools.count()
        self._on_event = on_event
        self.now = -math.inf

    def at(self, time: float, action: Action) -> None:
        """Run ``action`` at virtual ``time`` (not before the current time)."""
        if time < self.now:
            raise RuntimeError(f"an action scheduled at {time} is before now ({self.now})")
        heapq.heappush(self._heap, (time, next(self._order), action))

    def run(self) -> None:
        while self._heap:
            time, _, action = heapq.heappop(self._heap)
            self.now = time
            if self._on_event is not None:
                self._on_event(time)
            action(time)
