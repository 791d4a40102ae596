"""``gearshift serve``'s hold on the dispatcher process (``dispatch_supervisor``): restarted with
back-off when it dies (and said so), stopped with SIGTERM (SIGKILL when it ignores it), the
token in its environment and not on its command line, its output in the log file."""

from __future__ import annotations

import asyncio
import hashlib
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from scheduler.batches import dispatch_supervisor
from scheduler.batches.dispatch_credentials import TOKEN_ENV
from scheduler.batches.dispatch_supervisor import DispatcherSupervisor, worker_argv

pytestmark = pytest.mark.timeout(60)

TOKEN = "ab" * 32


def child(code: str) -> list[str]:
    return [sys.executable, "-c", code]


async def until(predicate: object, timeout_s: float = 20.0) -> None:
    assert callable(predicate)
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


def test_the_worker_command_line(tmp_path: Path) -> None:
    argv = worker_argv(Path("rel/config.yaml"), "http://127.0.0.1:8000", 4242)
    assert argv[:3] == [sys.executable, "-m", "scheduler.batches.worker"]
    assert argv[argv.index("--gateway-url") + 1] == "http://127.0.0.1:8000"
    assert argv[argv.index("--parent-pid") + 1] == "4242"
    assert Path(argv[argv.index("--config") + 1]).is_absolute()
    assert "--config" not in worker_argv(None, "http://x", 1)
    assert "--log-file" not in argv
    logged = worker_argv(None, "http://x", 1, tmp_path / "dispatcher.log")
    assert logged[logged.index("--log-file") + 1] == str(tmp_path / "dispatcher.log")


def test_the_worker_rotates_its_log_and_its_stray_output_follows(tmp_path: Path) -> None:
    """A dispatcher that serve keeps for months logs into at most ``backups + 1`` files; what
    bypasses logging (a warning, a crash's traceback) lands in the current file."""
    log = tmp_path / "dispatcher.log"
    code = f"""
import logging, sys, warnings
from scheduler.batches.worker import _LogFile
logging.basicConfig(level="INFO", handlers=[_LogFile({str(log)!r}, max_bytes=2000, backups=2)])
logging.captureWarnings(True)
for i in range(200):
    logging.getLogger("t").info("line %d of the dispatcher's progress", i)
print("stray standard error", file=sys.stderr, flush=True)
raise SystemExit("the last words")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert done.stdout == done.stderr == ""  # all of it went to the log
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["dispatcher.log", "dispatcher.log.1", "dispatcher.log.2"]
    assert all(p.stat().st_size <= 2000 + 100 for p in tmp_path.iterdir())
    current = log.read_text()
    assert "line 199 of" in current
    assert "stray standard error" in current and "the last words" in current


def test_a_dead_dispatcher_is_restarted_with_back_off_and_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dispatch_supervisor, "RESTART_S", 0.05)
    reports: list[str] = []
    log = tmp_path / "dispatcher.log"
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    code = (
        "import hashlib, os\n"
        f"token = os.environ['{TOKEN_ENV}'].encode()\n"
        f"print('token', hashlib.sha256(token).hexdigest() == '{digest}')\n"
        "raise SystemExit(3)\n"
    )
    supervisor = DispatcherSupervisor(child(code), token=TOKEN, log_path=log, report=reports.append)

    async def test() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(supervisor.run(stop))
        await until(lambda: supervisor.starts >= 3)
        stop.set()
        await asyncio.wait_for(task, 10)

    asyncio.run(test())
    assert reports[0].startswith("Batch dispatcher running (pid")
    restarts = [r for r in reports if "exited with code 3" in r]
    assert len(restarts) >= 2 and "restarting it in 0 s" in restarts[0]
    assert log.read_text().count("token True") >= 2
    assert TOKEN not in " ".join(supervisor._argv)


@pytest.mark.parametrize("ignores_sigterm", [False, True])
def test_stop_ends_the_dispatcher(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ignores_sigterm: bool
) -> None:
    monkeypatch.setattr(dispatch_supervisor, "STOP_TIMEOUT_S", 0.5)
    code = "import signal, sys, time\n"
    if ignores_sigterm:
        code += "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    code += "print('up', flush=True)\ntime.sleep(60)\n"
    log = tmp_path / "dispatcher.log"
    supervisor = DispatcherSupervisor(child(code), token=TOKEN, log_path=log, report=print)
    codes: list[int | None] = []

    async def test() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(supervisor.run(stop))
        await until(lambda: log.exists() and "up" in log.read_text())
        stop.set()
        await asyncio.wait_for(task, 10)

    real_wait = asyncio.subprocess.Process.wait

    async def recording_wait(process: asyncio.subprocess.Process) -> int:
        returncode = await real_wait(process)
        codes.append(returncode)
        return returncode

    monkeypatch.setattr(asyncio.subprocess.Process, "wait", recording_wait)
    asyncio.run(test())
    expected = -signal.SIGKILL if ignores_sigterm else -signal.SIGTERM
    assert codes and codes[-1] == expected and supervisor.starts == 1
