"""Run ``gearshift serve`` as a user would (the installed console script) and talk to it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GEARSHIFT = Path(sys.executable).parent / "gearshift"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class ServeProcess:
    process: subprocess.Popen[bytes]
    base_url: str
    session_file: Path
    log: Path

    @property
    def session(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.session_file.read_text())
        return data

    def status(self) -> dict[str, Any]:
        request = urllib.request.Request(
            f"{self.session['admin_url']}/admin/v1/status",
            headers={"Authorization": f"Bearer {self.session['admin_token']}"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            document: dict[str, Any] = json.loads(response.read())
            return document

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def stop(self) -> int:
        """Ctrl-C, as a user would; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=90)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_serve(
    tmp: Path, config: Path | None = None, timeout_s: float = 180, extra: tuple[str, ...] = ()
) -> ServeProcess:
    port = free_port()
    session_file = tmp / "session.json"
    log = tmp / "serve.log"
    argv = [str(GEARSHIFT), "serve", "--port", str(port), "--admin-port", str(free_port())]
    if config is not None:
        argv += ["--config", str(config)]
    argv += extra
    env = {**os.environ, "GEARSHIFT_SESSION_FILE": str(session_file)}
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    serve = ServeProcess(process, f"http://127.0.0.1:{port}", session_file, log)
    deadline = time.monotonic() + timeout_s
    while not session_file.exists():
        if process.poll() is not None:
            raise AssertionError(
                f"gearshift serve exited with {process.returncode}:\n{serve.output()}"
            )
        if time.monotonic() > deadline:
            serve.stop()
            raise AssertionError(f"gearshift serve not ready in {timeout_s} s:\n{serve.output()}")
        time.sleep(0.25)
    return serve


def wait_for(predicate: Any, timeout_s: float, what: str) -> Any:
    """Poll ``predicate`` until it returns something truthy, or fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what} (last: {last!r})")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _stat(pid: int | str) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state is [0], ppid [1])."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def descendants(pid: int) -> dict[int, str]:
    """Every live process below ``pid`` (from /proc), with its start time, so a later check
    is not fooled by the kernel reusing a pid."""
    children: dict[int, list[int]] = {}
    started: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        fields = _stat(entry.name) if entry.name.isdigit() else None
        if fields is None:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
        started[int(entry.name)] = fields[19]
    found: dict[int, str] = {}
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found[child] = started[child]
                stack.append(child)
    return found


def survivors(processes: dict[int, str]) -> list[int]:
    """The processes of a ``descendants`` snapshot still running (zombies do not count)."""
    left = []
    for pid, start_time in processes.items():
        fields = _stat(pid)
        if fields is not None and fields[19] == start_time and fields[0] != "Z":
            left.append(pid)
    return left
