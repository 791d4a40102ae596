"""The gateway's endpoint table: the controller's fleet state plus live engine load.

A background task refreshes the fleet state from a ``FleetStateSource`` and scrapes every
engine's ``/metrics``; the request path only reads the table (no I/O). The gateway's own
in-flight count per replica covers the gap between scrapes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Protocol

import aiohttp

from nodes.engines.metrics import parse_engine_metrics
from scheduler.framework.placement import ClassDemand
from scheduler.framework.routing import EndpointView, EngineLoad
from scheduler.state import FleetState
from scheduler.types import TrafficClass

log = logging.getLogger(__name__)


class FleetStateSource(Protocol):
    """Where the gateway learns the endpoint table (the controller, or a fixed one in tests),
    and where it reports the demand it sees (which drives replanning)."""

    async def fetch(self) -> FleetState: ...

    async def report_demand(self, demand: Mapping[str, tuple[ClassDemand, ...]]) -> None: ...


class StaticFleetState:
    """A ``FleetStateSource`` that always returns the same state."""

    def __init__(self, state: FleetState) -> None:
        self.state = state
        self.demand: Mapping[str, tuple[ClassDemand, ...]] = {}
        """The last demand reported (tests read it)."""

    async def fetch(self) -> FleetState:
        return self.state

    async def report_demand(self, demand: Mapping[str, tuple[ClassDemand, ...]]) -> None:
        self.demand = demand


Scrape = Callable[[aiohttp.ClientSession, EndpointView, float], Awaitable[EngineLoad]]
"""Reads one engine's load (the default scrapes its ``/metrics``)."""


class EndpointTable:
    """Read by every request; written only by ``refresh``."""

    def __init__(
        self,
        source: FleetStateSource,
        scrape: Scrape | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._source = source
        self._clock = clock
        self._scrape = scrape or scrape_metrics
        self.state = FleetState(version=-1)
        self._loads: dict[str, EngineLoad] = {}
        self._in_flight: Counter[str] = Counter()
        self._interactive: Counter[str] = Counter()
        self._interactive_until: dict[str, float] = {}
        """Wall-clock time (the routing clock) each replica's last interactive request ended."""
        self._completed: Counter[str] = Counter()
        """Requests this gateway finished per replica, ever; scrapes lag behind them."""
        self._completed_at_scrape: dict[str, int] = {}

    def models(self) -> tuple[str, ...]:
        return self.state.models

    def candidates(self, model: str) -> list[EndpointView]:
        """The model's endpoints with their latest load and in-flight count."""
        return [
            replace(endpoint, load=self.load(endpoint.replica_id))
            for endpoint in self.state.endpoints
            if endpoint.model == model
        ]

    def load(self, replica_id: str) -> EngineLoad:
        """The last scrape, less the requests this gateway finished since it was taken (a
        scrape is up to ``load_refresh_s`` old), plus the gateway's exact in-flight counts and
        when it last had interactive work there."""
        scraped = self._loads.get(replica_id, EngineLoad())
        done = self._completed[replica_id] - self._completed_at_scrape.get(replica_id, 0)
        running = max(0, scraped.running - done)
        waiting = max(0, scraped.waiting - max(0, done - scraped.running))
        return replace(
            scraped,
            running=running,
            waiting=waiting,
            in_flight=self._in_flight[replica_id],
            interactive=self._interactive[replica_id],
            interactive_until=_latest(
                scraped.interactive_until, self._interactive_until.get(replica_id)
            ),
        )

    def acquire(self, replica_id: str, traffic_class: TrafficClass | None = None) -> None:
        self._in_flight[replica_id] += 1
        if traffic_class is TrafficClass.INTERACTIVE:
            self._interactive[replica_id] += 1

    def release(
        self,
        replica_id: str,
        traffic_class: TrafficClass | None = None,
        *,
        reached_engine: bool = True,
    ) -> None:
        self._in_flight[replica_id] -= 1
        if reached_engine:
            self._completed[replica_id] += 1
        if self._in_flight[replica_id] <= 0:
            del self._in_flight[replica_id]
        if traffic_class is TrafficClass.INTERACTIVE:
            self._interactive[replica_id] -= 1
            self._interactive_until[replica_id] = self._clock()
            if self._interactive[replica_id] <= 0:
                del self._interactive[replica_id]

    async def refresh(self, session: aiohttp.ClientSession, timeout_s: float) -> None:
        """Fetch the fleet state (keeping the last one on failure) and scrape every engine."""
        try:
            self.state = await self._source.fetch()
        except Exception as exc:  # keep serving on the last known table; log and retry next round
            log.warning(
                "fleet state refresh failed, keeping version %s: %s", self.state.version, exc
            )
        endpoints = self.state.endpoints
        completed = {e.replica_id: self._completed[e.replica_id] for e in endpoints}
        loads = await asyncio.gather(*(self._scrape(session, e, timeout_s) for e in endpoints))
        self._loads = {e.replica_id: load for e, load in zip(endpoints, loads, strict=True)}
        self._completed_at_scrape = completed

    async def run(self, session: aiohttp.ClientSession, interval_s: float) -> None:
        """Refresh forever, every ``interval_s`` seconds."""
        while True:
            try:
                await self.refresh(session, timeout_s=max(0.2, interval_s))
            except Exception:  # the table must keep refreshing; one bad round is logged
                log.exception("endpoint table refresh failed")
            await asyncio.sleep(interval_s)


def _latest(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


async def scrape_metrics(
    session: aiohttp.ClientSession, endpoint: EndpointView, timeout_s: float
) -> EngineLoad:
    """The engine's load from its Prometheus ``/metrics``; empty (not fresh) on any failure."""
    try:
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        async with session.get(f"{endpoint.url}/metrics", timeout=timeout) as response:
            if response.status != 200:
                return EngineLoad()
            metrics = parse_engine_metrics(await response.text())
    except (aiohttp.ClientError, TimeoutError):
        return EngineLoad()
    return EngineLoad(metrics.running, metrics.waiting, metrics.kv_usage, fresh=True)
