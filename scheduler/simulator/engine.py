"""A heap of timed actions run in virtual time: the simulator's only clock.

Invariants: actions run in (time, scheduling order) order; time never goes backwards (an
action scheduled in the past is a bug and raises); a cancelled action never runs and is not an
event; nothing here reads the wall clock.
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
        self._cancelled: set[int] = set()
        self._on_event = on_event
        self.now = -math.inf

    def at(self, time: float, action: Action) -> int:
        """Run ``action`` at virtual ``time`` (not before the current time); returns a handle
        for ``cancel``."""
        if time < self.now:
            raise RuntimeError(f"an action scheduled at {time} is before now ({self.now})")
        handle = next(self._order)
        heapq.heappush(self._heap, (time, handle, action))
        return handle

    def cancel(self, handle: int) -> None:
        """Drop a scheduled action that has not run yet."""
        self._cancelled.add(handle)

    def run(self) -> None:
        heap, cancelled, on_event = self._heap, self._cancelled, self._on_event
        while heap:
            time, handle, action = heapq.heappop(heap)
            if cancelled and handle in cancelled:
                cancelled.discard(handle)
                continue
            self.now = time
            if on_event is not None:
                on_event(time)
            action(time)
