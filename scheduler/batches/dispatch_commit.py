"""Group commit for the dispatcher: the results of lines answered close together go to the store
in one transaction (one fsync with ``synchronous`` FULL), not one each.

``commit`` queues a line's result and waits until a transaction holding it has committed
(True: it is the line's result; False: the line had one already). ``run`` commits whatever is
queued whenever something is, one transaction at a time: while one commits, the next group
gathers. ``flush`` commits what is left (at shutdown). Results stay exactly-once because the
store keeps only a line's first result, whichever transaction brings it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from scheduler.batches.leases import Leases
from scheduler.batches.objects import LineResult

log = logging.getLogger(__name__)


class GroupCommit:
    """Batches ``Leases.record_results`` calls; ``run`` it as a task beside the dispatcher."""

    def __init__(self, leases: Leases, clock: Callable[[], float]) -> None:
        self._leases = leases
        self._clock = clock
        self._queued: list[tuple[LineResult, asyncio.Future[bool]]] = []
        self._wake = asyncio.Event()
        self.transactions = 0

    async def commit(self, result: LineResult) -> bool:
        """Wait until ``result`` is committed; whether it became the line's result."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_retrieve)  # its task may be gone by the time it is set
        self._queued.append((result, future))
        self._wake.set()
        return await asyncio.shield(future)

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        """Commit everything queued now."""
        group, self._queued = self._queued, []
        if not group:
            return
        results = [result for result, _ in group]
        try:
            recorded = await asyncio.to_thread(
                self._leases.record_results, results, now=self._clock()
            )
        except Exception:  # one bad line must not sink the group: commit them one by one
            log.exception("committing %d results together failed; one by one", len(group))
            for result, future in group:
                await self._one(result, future)
            return
        self.transactions += 1
        for (_, future), ok in zip(group, recorded, strict=True):
            if not future.done():
                future.set_result(ok)

    async def _one(self, result: LineResult, future: asyncio.Future[bool]) -> None:
        try:
            ok = await asyncio.to_thread(self._leases.record_results, [result], now=self._clock())
        except Exception as exc:  # handed to the line's task, which logs and releases it
            if not future.done():
                future.set_exception(exc)
            return
        self.transactions += 1
        if not future.done():
            future.set_result(ok[0])


def _retrieve(future: asyncio.Future[bool]) -> None:
    if not future.cancelled():
        future.exception()
