"""Keeps the batch dispatcher running as a child process of ``gearshift serve``.

``run`` starts ``python -m scheduler.batches.worker`` (its output appended to a log file beside
the batch store, which the worker rotates itself when ``worker_argv`` is given the log path),
restarts it with exponential back-off whenever it exits while serve runs (saying so through
``report``), and once ``stop`` is set ends it with SIGTERM (its leases are released), then
SIGKILL after ``STOP_TIMEOUT_S``. The worker also exits by itself when serve's process goes
away (``--parent-pid``), so a killed serve leaves no dispatcher behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from scheduler.batches.dispatch_credentials import TOKEN_ENV

RESTART_S = 1.0
MAX_RESTART_S = 30.0
HEALTHY_AFTER_S = 60.0
"""A dispatcher that ran this long before it died is restarted after ``RESTART_S`` again."""
STOP_TIMEOUT_S = 10.0
LOG_NAME = "dispatcher.log"


def worker_argv(
    config_path: Path | None, gateway_url: str, parent_pid: int, log_path: Path | None = None
) -> list[str]:
    """The worker's command line; with ``log_path`` it logs there itself, rotating the file."""
    argv = [sys.executable, "-m", "scheduler.batches.worker", "--gateway-url", gateway_url]
    argv += ["--parent-pid", str(parent_pid)]
    if log_path is not None:
        argv += ["--log-file", str(log_path)]
    if config_path is not None:
        argv += ["--config", str(config_path.resolve())]
    return argv


class DispatcherSupervisor:
    """One dispatcher process at a time, for as long as ``run`` runs."""

    def __init__(
        self,
        argv: list[str],
        *,
        token: str,
        log_path: Path,
        report: Callable[[str], None],
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._argv = argv
        self._env = {**(os.environ if environ is None else environ), TOKEN_ENV: token}
        self.log_path = log_path
        self._report = report
        self.pid: int | None = None
        self.starts = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Start, restart and finally stop the dispatcher; returns once it has exited."""
        loop = asyncio.get_running_loop()
        delay = RESTART_S
        while not stop.is_set():
            started = loop.time()
            with self.log_path.open("ab") as log:
                process = await asyncio.create_subprocess_exec(
                    *self._argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self._env,
                    start_new_session=True,  # Ctrl-C in serve's terminal is serve's to handle
                )
            self.pid, self.starts = process.pid, self.starts + 1
            if self.starts == 1:
                self._report(f"Batch dispatcher running (pid {process.pid}, log {self.log_path}).")
            if await self._until_exit_or_stop(process, stop):
                return
            ran_s = loop.time() - started
            delay = RESTART_S if ran_s >= HEALTHY_AFTER_S else delay
            self._report(
                f"Batch dispatcher (pid {process.pid}) exited with code {process.returncode} "
                f"after {ran_s:.0f} s; restarting it in {delay:.0f} s (log {self.log_path})."
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(MAX_RESTART_S, delay * 2)

    async def _until_exit_or_stop(
        self, process: asyncio.subprocess.Process, stop: asyncio.Event
    ) -> bool:
        """Wait for the process to exit (False) or for ``stop`` (then stop it; True)."""
        exited = asyncio.ensure_future(process.wait())
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # serve is going down some other way: no orphan
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            raise
        finally:
            stopping.cancel()
        if exited.done():
            return False
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        await asyncio.wait({exited}, timeout=STOP_TIMEOUT_S)
        if not exited.done():
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await exited
        return True
