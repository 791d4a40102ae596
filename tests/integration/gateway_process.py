"""The gateway in a process of its own, for measurements where the test's client threads must
not share the gateway's interpreter (its GIL turns client work into gateway latency), and a
load generator that runs in another process, as remote clients would."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import random
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from scheduler.config import GearshiftConfig
from scheduler.state import FleetState

_SPAWN = multiprocessing.get_context("spawn")


@dataclass(frozen=True)
class Answer:
    status: int
    accelerator: str
    sent_at: float
    answered_at: float


def _gateway_main(config: GearshiftConfig, state: FleetState, report: Connection) -> None:
    from scheduler.gateway.endpoints import StaticFleetState
    from scheduler.gateway.server import bind, run_gateway
    from scheduler.plugins import PluginRegistry

    public, admin = bind("127.0.0.1", 0), bind("127.0.0.1", 0)

    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)

        async def started(_: object) -> None:
            report.send(public.getsockname()[1])

        await run_gateway(
            config,
            PluginRegistry.from_entry_points(),
            StaticFleetState(state),
            public=public,
            admin=admin,
            admin_token="t" * 20,
            stop=stop,
            on_started=started,
        )

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:  # pragma: no cover - uvicorn[standard] brings uvloop
        asyncio.run(main())


class GatewayProcess:
    """``run_gateway`` over a fixed fleet state in a spawned process; SIGTERM stops it."""

    def __init__(self, config: GearshiftConfig, state: FleetState) -> None:
        self._ours, theirs = _SPAWN.Pipe()
        self._process = _SPAWN.Process(
            target=_gateway_main, args=(config, state, theirs), daemon=True
        )
        self.url = ""

    def __enter__(self) -> GatewayProcess:
        self._process.start()
        assert self._ours.poll(60), "the gateway process did not start"
        self.url = f"http://127.0.0.1:{self._ours.recv()}"
        return self

    def __exit__(self, *exc: object) -> None:
        self._process.terminate()
        self._process.join(30)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(10)


def _flood_main(
    url: str,
    body: Mapping[str, Any],
    send_times: list[float],
    niceness: int,
    report: Connection,
) -> None:
    """Send ``body`` at ``send_times`` (seconds from start) without waiting for answers;
    report each answer's status, ``x-gearshift-accelerator`` and when it was sent and
    answered (``time.time()``)."""
    import aiohttp

    os.nice(niceness)

    async def main() -> list[Answer]:
        answers: list[Answer] = []
        timeout = aiohttp.ClientTimeout(total=600)
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), timeout=timeout
        ) as session:

            async def one(at: float, start: float) -> None:
                await asyncio.sleep(max(0.0, at - (time.perf_counter() - start)))
                sent = time.time()
                async with session.post(f"{url}/v1/completions", json=body) as response:
                    await response.read()
                    accelerator = response.headers.get("x-gearshift-accelerator", "")
                    answers.append(Answer(response.status, accelerator, sent, time.time()))

            start = time.perf_counter()
            await asyncio.gather(*(one(at, start) for at in send_times))
        return answers

    report.send(asyncio.run(main()))


class LoadProcess:
    """A client fleet in another process: POSTs one body on a schedule, collects the answers.

    ``niceness`` lowers its CPU priority: on a machine this small the load generator stands
    in for clients on other machines and must not take the gateway's or the engines' CPU."""

    def __init__(
        self, url: str, body: Mapping[str, Any], send_times: list[float], niceness: int = 10
    ) -> None:
        self._ours, theirs = _SPAWN.Pipe()
        self._process = _SPAWN.Process(
            target=_flood_main,
            args=(url, dict(body), send_times, niceness, theirs),
            daemon=True,
        )

    def start(self) -> None:
        self._process.start()

    def answers(self, timeout_s: float) -> list[Answer]:
        """Every request's answer, once all were answered."""
        assert self._ours.poll(timeout_s), "the load generator did not finish"
        answers: list[Answer] = self._ours.recv()
        self._process.join(10)
        return answers

    def stop(self) -> None:
        if self._process.is_alive():
            self._process.kill()
            self._process.join(10)


def poisson_times(rate_per_s: float, duration_s: float, seed: int) -> list[float]:
    """Poisson arrival times over ``duration_s``."""
    rng = random.Random(seed)
    times, now = [], 0.0
    while (now := now + rng.expovariate(rate_per_s)) < duration_s:
        times.append(now)
    return times
