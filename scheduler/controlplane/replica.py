"""``ReplicaActor``: a Ray actor that owns one engine process on the node Ray placed it on.

It starts the engine, reports its URL and health (with a bounded log tail when it fails), and
stops it gracefully. The engine process dies with the actor: it gets ``PR_SET_PDEATHSIG`` and
watches its parent pid, so killing the actor never leaves an orphan engine.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import ray

from nodes.engines.launch import EngineSpec, engine_command
from scheduler.types import LABEL_NODE_ID, ReplicaState

_LOG_TAIL_BYTES = 2048
_PR_SET_PDEATHSIG = 1
_MISSES_BEFORE_FAILED = 3


@dataclass(frozen=True, slots=True)
class ReplicaHealth:
    state: ReplicaState
    url: str
    detail: str = ""
    placed_on: str = ""
    """Gearshift node id of the Ray node the actor actually runs on."""
    pid: int = 0
    """The replica actor's process id."""
    engine_pid: int = 0


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class ReplicaActor:
    """One replica. Methods are cheap and never block for long (health probes time out)."""

    def __init__(self, replica_id: str, spec: EngineSpec) -> None:
        self.replica_id = replica_id
        labels = ray.get_runtime_context().get_node_labels()
        self.placed_on = str(labels.get(LABEL_NODE_ID, ""))
        host = ray.util.get_node_ip_address()
        port = _free_port(host)
        self.url = f"http://{host}:{port}"
        command = engine_command(spec, host, port, os.getpid())
        log_dir = Path(tempfile.gettempdir()) / "gearshift" / "replicas"
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{replica_id}.log"
        self._log = self.log_path.open("wb")
        self._process = subprocess.Popen(  # noqa: S603 - argv built from our own spec
            command.argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **command.env},
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - async-signal-safe prctl only
        )
        self._ready = False
        self._misses = 0

    def health(self) -> ReplicaHealth:
        """READY once the engine answers /health; FAILED (with a log tail) once it exited."""
        state, detail = self._probe()
        return ReplicaHealth(
            state, self.url, detail, self.placed_on, os.getpid(), self._process.pid
        )

    def _probe(self) -> tuple[ReplicaState, str]:
        code = self._process.poll()
        if code is not None:
            return ReplicaState.FAILED, f"engine exited with {code}: {self._tail()}"
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=1.0) as response:
                self._ready = response.status == 200
        except (urllib.error.URLError, OSError):
            if not self._ready:
                return ReplicaState.STARTING, ""
            # A loaded machine can miss one probe; three in a row means the engine is stuck.
            self._misses += 1
            if self._misses >= _MISSES_BEFORE_FAILED:
                return ReplicaState.FAILED, "engine stopped answering /health"
            return ReplicaState.READY, ""
        self._misses = 0
        return (ReplicaState.READY if self._ready else ReplicaState.STARTING), ""

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """SIGTERM the engine, wait up to ``timeout_s``, then SIGKILL. Returns the exit code."""
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=5)
        self._log.close()
        return self._process.returncode

    def _tail(self) -> str:
        try:
            with self.log_path.open("rb") as log:
                log.seek(0, os.SEEK_END)
                size = log.tell()
                log.seek(max(0, size - _LOG_TAIL_BYTES))
                text = log.read().decode("utf-8", errors="replace")
        except OSError:
            return ""
        lines = [line for line in text.splitlines() if line.strip()]
        return " | ".join(lines[-5:])
