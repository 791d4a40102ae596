"""Fixtures for the engine tests: a virtual-time event loop and a linear fake step-time model.

Async tests (``pytest.mark.anyio``) run on ``VirtualTimeLoop``: whenever nothing is ready to run,
the loop jumps its clock to the next timer instead of waiting, so ``asyncio.sleep(30)`` returns at
once with ``loop.time()`` 30 s later, and results do not depend on the machine's speed. If nothing
is ready and no timer is set, the loop would wait forever: it raises instead, so a hang fails fast.
"""

from __future__ import annotations

import asyncio
import selectors
from dataclasses import dataclass
from typing import Any

import pytest


class _VirtualClockSelector(selectors.DefaultSelector):
    """A selector that never blocks: it advances a virtual clock by the timeout it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.selects = 0

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        self.selects += 1
        events = super().select(0)
        if events:
            return events
        if timeout is None:
            raise RuntimeError("virtual-time loop: nothing is scheduled, the test would hang")
        self.now += timeout
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop on virtual time; ``wakeups`` counts how often it looked for work."""

    def __init__(self) -> None:
        self._virtual = _VirtualClockSelector()
        super().__init__(self._virtual)

    def time(self) -> float:
        return self._virtual.now

    @property
    def wakeups(self) -> int:
        return self._virtual.selects


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    return "asyncio", {"loop_factory": VirtualTimeLoop}


@dataclass(frozen=True)
class LinearSteps:
    """A step-time model with round numbers: prefill and decode grow linearly."""

    kv_capacity_tokens: int = 100_000
    prefill_fixed: float = 0.010
    prefill_per_token: float = 0.001
    decode_fixed: float = 0.020
    decode_per_seq: float = 0.005

    def prefill_seconds(self, prompt_tokens: int) -> float:
        return self.prefill_fixed + self.prefill_per_token * prompt_tokens

    def decode_step_seconds(self, batch_size: int, mean_context_tokens: int) -> float:
        return self.decode_fixed + self.decode_per_seq * batch_size


@pytest.fixture
def linear_steps() -> type[LinearSteps]:
    """The ``LinearSteps`` class, to build fakes with the numbers a test needs."""
    return LinearSteps
