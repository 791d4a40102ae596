"""The sim engine as a process: command-line flags, start-up, graceful shutdown and the owner watch.

``python -m nodes.engines.sim --spec-json '<SimEngineSpec JSON>' --host 127.0.0.1 --port 8001
[--parent-pid PID]`` (or ``--spec-file path.json``). ``engine_command`` builds that argv for a
launcher. Once the port is bound the process logs one line starting ``sim engine serving``;
callers should poll ``GET /health`` rather than read the log.

Exit codes: 0 after a graceful shutdown (SIGTERM, SIGINT, or the owner process gone: stop
accepting connections, let in-flight requests finish for up to ``--graceful-timeout`` seconds);
2 for bad flags or a spec the performance model refuses; 3 when the port cannot be bound.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

import pydantic
import uvicorn
import uvloop

from nodes.engines.sim.lifeline import watch_owner
from nodes.engines.sim.server import create_app
from nodes.engines.sim.spec import SimEngineSpec, step_time_model
from scheduler.errors import GearshiftError

log = logging.getLogger("nodes.engines.sim")

DEFAULT_GRACEFUL_TIMEOUT_S = 5.0
EXIT_USAGE = 2


def engine_command(
    spec: SimEngineSpec,
    *,
    host: str,
    port: int,
    parent_pid: int | None = None,
    python: str = sys.executable,
) -> list[str]:
    """The argv that starts a sim engine for ``spec`` on ``host:port``, owned by ``parent_pid``."""
    argv = [python, "-m", "nodes.engines.sim", "--spec-json", spec.model_dump_json()]
    argv += ["--host", host, "--port", str(port)]
    if parent_pid is not None:
        argv += ["--parent-pid", str(parent_pid)]
    return argv


def build_parser() -> argparse.ArgumentParser:
    """The flags of ``python -m nodes.engines.sim``."""
    parser = argparse.ArgumentParser(
        prog="python -m nodes.engines.sim",
        description="Serve an OpenAI-compatible API that behaves like one vLLM replica on the "
        "accelerator the spec names, with timing from Gearshift's performance model.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--spec-json", help="the SimEngineSpec as a JSON object")
    source.add_argument("--spec-file", type=Path, help="a file holding the SimEngineSpec JSON")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to bind; 0 picks a free one")
    parser.add_argument(
        "--parent-pid",
        type=int,
        help="exit gracefully once this process is gone (checked every second)",
    )
    parser.add_argument(
        "--graceful-timeout",
        type=float,
        default=DEFAULT_GRACEFUL_TIMEOUT_S,
        help="seconds in-flight requests may run after a shutdown request (default 5)",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="log level of the engine's own messages (default info)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one sim engine until it is told to stop; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    original_ppid = os.getppid()
    try:
        raw = args.spec_json if args.spec_file is None else args.spec_file.read_text()
        spec = SimEngineSpec.model_validate_json(raw)
        step_model = step_time_model(spec)
    except (OSError, pydantic.ValidationError, GearshiftError) as exc:
        print(f"sim engine: invalid spec: {exc}", file=sys.stderr)
        return EXIT_USAGE

    def serving(port: int) -> None:
        log.info(
            "sim engine serving %s as %d x %s on http://%s:%d "
            "(kv_capacity_tokens=%d, max_num_seqs=%d, time_scale=%g, pid=%d)",
            spec.served_model_name,
            spec.tensor_parallel,
            spec.accelerator,
            args.host,
            port,
            step_model.kv_capacity_tokens,
            spec.max_num_seqs,
            spec.time_scale,
            os.getpid(),
        )

    config = uvicorn.Config(
        create_app(spec, step_model),
        host=args.host,
        port=args.port,
        http="httptools",
        lifespan="on",
        access_log=False,
        log_config=None,
        log_level="warning",
        timeout_graceful_shutdown=max(0, round(args.graceful_timeout)),
    )
    server = _Server(config, on_serving=serving)

    def stop(signum: int, frame: FrameType | None) -> None:
        server.should_exit = True

    # uvicorn swaps in its own handlers while serving, then restores these and re-raises the
    # signal it caught; handling it here (instead of the default, which kills the process) is
    # what turns a graceful shutdown into exit code 0.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stop)

    def owner_gone() -> None:
        server.should_exit = True

    async def run() -> None:
        watch = None
        if args.parent_pid is not None:
            watch = asyncio.create_task(watch_owner(args.parent_pid, original_ppid, owner_gone))
        try:
            await server.serve()
        finally:
            if watch is not None:
                watch.cancel()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(run())
    return 0


class _Server(uvicorn.Server):
    """uvicorn's server, reporting the bound port once it listens."""

    def __init__(self, config: uvicorn.Config, *, on_serving: Callable[[int], None]) -> None:
        super().__init__(config)
        self._on_serving = on_serving

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            listener = self.servers[0].sockets[0]
            self._on_serving(int(listener.getsockname()[1]))
