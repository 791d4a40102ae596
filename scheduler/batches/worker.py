"""The batch dispatcher as a process: ``python -m scheduler.batches.worker --gateway-url URL``.

``gearshift serve`` starts it once the gateway is up, restarts it when it dies and stops it on
shutdown (``dispatch_supervisor``); it can also run on its own against any gateway that shares
its batch store. It opens the store the config names (the built-in demo fleet's without
``--config``, as serve does), runs a ``Dispatcher`` until SIGTERM or SIGINT, releases the
leases of lines in flight and exits 0. It exits too when the process ``--parent-pid`` names
goes away, so it never outlives the serve that started it. The dispatcher token comes from the
environment (``dispatch_credentials.TOKEN_ENV``); without one, requests carry no credential
(a gateway with authentication off needs none). Exit codes: 0 stopped, 2 bad config.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import logging
import os
import secrets
import signal
import socket
import sys
from collections.abc import Sequence
from logging.handlers import RotatingFileHandler
from pathlib import Path

import aiohttp

from scheduler.batches.dispatch import Dispatcher, DispatchSettings
from scheduler.batches.dispatch_backlog import Backlog
from scheduler.batches.dispatch_credentials import TOKEN_ENV
from scheduler.batches.dispatch_http import GatewaySender
from scheduler.batches.store import BatchStore
from scheduler.config import GearshiftConfig, demo_config, load_config
from scheduler.errors import ConfigError
from scheduler.types import TrafficClass

log = logging.getLogger("scheduler.batches.worker")

LOG_MAX_BYTES = 10 * 1_048_576
LOG_BACKUPS = 3
TIMEOUT_MARGIN_S = 30.0
PARENT_CHECK_S = 0.5
_PR_SET_PDEATHSIG = 1


class _LogFile(RotatingFileHandler):
    """A log file rotated at ``LOG_MAX_BYTES``, keeping ``LOG_BACKUPS`` old ones, that also
    takes the process's standard output and error (whatever bypasses logging, such as a crash's
    traceback), re-pointed at the new file on each rotation."""

    def __init__(
        self, path: Path, max_bytes: int = LOG_MAX_BYTES, backups: int = LOG_BACKUPS
    ) -> None:
        super().__init__(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
        self._adopt_std_streams()

    def doRollover(self) -> None:  # noqa: N802 - logging's name
        super().doRollover()
        self._adopt_std_streams()

    def _adopt_std_streams(self) -> None:
        if self.stream is None:  # typed optional; the base class opens it (delay=False)
            return
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        for fd in (1, 2):
            os.dup2(self.stream.fileno(), fd)


def request_timeout_s(config: GearshiftConfig) -> float:
    """How long a line may take: the longest wait in the gateway's batch or standard queue,
    plus the gateway's own request timeout, plus a margin."""
    admission = config.gateway.admission
    classes = (TrafficClass.BATCH, TrafficClass.STANDARD)
    queued = max(admission.limits(c).queue_ttl_s for c in classes)
    return queued + config.gateway.request_timeout_s + TIMEOUT_MARGIN_S


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m scheduler.batches.worker",
        description="Run the lines of every in-progress batch through a Gearshift gateway.",
    )
    parser.add_argument("--config", type=Path, help="Config file (default: the demo fleet's).")
    parser.add_argument("--gateway-url", required=True, help="The gateway's public base URL.")
    parser.add_argument("--worker-id", help="Lease owner name (default: host:pid:random).")
    parser.add_argument(
        "--max-in-flight",
        type=int,
        help="Most lines in flight at once (default: the config's batch.max_in_flight).",
    )
    parser.add_argument("--parent-pid", type=int, help="Exit when this process is gone.")
    parser.add_argument("--log-level", default="INFO", help="Python log level.")
    parser.add_argument(
        "--log-file",
        type=Path,
        help=f"Log to this file, rotated at {LOG_MAX_BYTES // 1_048_576} MiB with "
        f"{LOG_BACKUPS} old files kept (default: standard error).",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    handler = _LogFile(args.log_file) if args.log_file else logging.StreamHandler(sys.stderr)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=[handler],
    )
    logging.captureWarnings(True)
    if args.parent_pid is not None and not _die_with_parent(args.parent_pid):
        log.warning("parent process %d is gone before the dispatcher started", args.parent_pid)
        return 0
    try:
        config = load_config(args.config) if args.config else demo_config()
        if args.max_in_flight is not None and args.max_in_flight < 1:
            raise ConfigError("--max-in-flight must be at least 1")
        if not config.batch.enabled:
            log.info("batch.enabled is false: nothing to dispatch")
            return 0
        store = BatchStore.open(config.batch)
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    worker_id = args.worker_id or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
    settings = DispatchSettings.from_config(config.batch, worker_id, args.max_in_flight)
    try:
        asyncio.run(
            _run(store, settings, args.gateway_url, request_timeout_s(config), args.parent_pid)
        )
    finally:
        store.close()
    return 0


async def _run(
    store: BatchStore,
    settings: DispatchSettings,
    gateway_url: str,
    timeout_s: float,
    parent_pid: int | None,
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    watcher = asyncio.create_task(_watch_parent(parent_pid, stop)) if parent_pid else None
    backlog = Backlog.open(store)
    connector = aiohttp.TCPConnector(limit=settings.max_in_flight)
    try:
        async with aiohttp.ClientSession(connector=connector) as session:
            sender = GatewaySender(
                session, gateway_url, token=os.environ.get(TOKEN_ENV) or None, timeout_s=timeout_s
            )
            await Dispatcher(store, backlog, sender, settings).run(stop)
    finally:
        backlog.close()
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
    log.info("batch dispatcher %s stopped", settings.worker_id)


async def _watch_parent(parent_pid: int, stop: asyncio.Event) -> None:
    while os.getppid() == parent_pid:
        await asyncio.sleep(PARENT_CHECK_S)
    log.warning("parent process %d is gone: stopping", parent_pid)
    stop.set()


def _die_with_parent(parent_pid: int) -> bool:
    """Have the kernel SIGTERM this process when its parent dies (Linux; the parent watch
    covers the rest); False when the parent is gone already."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    return os.getppid() == parent_pid


if __name__ == "__main__":
    sys.exit(main())
