"""``ReplicaActor``: a Ray actor that owns one engine process on the node Ray placed it on.

It starts the engine with the GPUs Ray assigned, reports its URL and health (with a bounded
tail of the engine's log), drains it (wait for in-flight requests, then SIGTERM) and stops it.
The engine dies with the actor: it gets ``PR_SET_PDEATHSIG``, and engines that fork (vLLM's
engine core and workers) run in their own process group, which is killed whole, so neither a
killed actor nor a crashed engine leaves orphans holding memory or GPUs.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import ray

from nodes.engines.launch import EngineSpec, engine_command
from nodes.engines.metrics import parse_engine_metrics
from scheduler.types import LABEL_NODE_ID, ReplicaState

_LOG_TAIL_BYTES = 4096
_LOG_TAIL_LINES = 8
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
    log_tail: str = ""
    """The last lines the engine wrote (bounded)."""


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class ReplicaActor:
    """One replica. Methods are cheap and never block for long (probes time out)."""

    def __init__(self, replica_id: str, spec: EngineSpec) -> None:
        self.replica_id = replica_id
        labels = ray.get_runtime_context().get_node_labels()
        self.placed_on = str(labels.get(LABEL_NODE_ID, ""))
        host = ray.util.get_node_ip_address()
        port = _free_port(host)
        self.url = f"http://{host}:{port}"
        gpu_ids = [int(gpu) for gpu in ray.get_gpu_ids()]
        command = engine_command(spec, host, port, os.getpid(), gpu_ids)
        log_dir = Path(tempfile.gettempdir()) / "gearshift" / "replicas"
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{replica_id}.{os.getpid()}.log"
        self._log = self.log_path.open("wb")
        self._group = command.process_group
        self._process = subprocess.Popen(  # noqa: S603 - argv built from our own spec
            command.argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **command.env},
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - async-signal-safe prctl only
            start_new_session=command.process_group,
        )
        self._ready = False
        self._misses = 0

    def health(self) -> ReplicaHealth:
        """READY once the engine answers /health; FAILED (with its log tail) once it exited
        or stopped answering."""
        state, detail = self._probe()
        return ReplicaHealth(
            state,
            self.url,
            detail,
            self.placed_on,
            os.getpid(),
            self._process.pid,
            self._tail(),
        )

    def _probe(self) -> tuple[ReplicaState, str]:
        code = self._process.poll()
        if code is not None:
            self._kill_group()  # an engine that died may leave forked children behind
            return ReplicaState.FAILED, f"engine exited with {code}"
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

    def drain(self, timeout_s: float, poll_s: float = 0.25) -> int | None:
        """Wait until the engine has no running or waiting request (or ``timeout_s``), then
        stop it. The caller has already taken the replica out of the endpoint table."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self._process.poll() is None:
            if self._idle():
                break
            time.sleep(poll_s)
        return self.stop(max(1.0, deadline - time.monotonic()))

    def _idle(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/metrics", timeout=1.0) as response:
                metrics = parse_engine_metrics(response.read().decode("utf-8", "replace"))
        except (urllib.error.URLError, OSError):
            return False
        return metrics.running + metrics.waiting == 0

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """SIGTERM the engine (its whole group), wait up to ``timeout_s``, then SIGKILL.
        Returns the exit code. Idempotent."""
        if self._process.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self._process.wait(timeout=5)
        self._kill_group()
        self._log.close()
        return self._process.returncode

    def _signal(self, signum: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if self._group:
                os.killpg(self._process.pid, signum)
            else:
                self._process.send_signal(signum)

    def _kill_group(self) -> None:
        if self._group:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._process.pid, signal.SIGKILL)

    def _tail(self) -> str:
        try:
            with self.log_path.open("rb") as log:
                log.seek(0, os.SEEK_END)
                log.seek(max(0, log.tell() - _LOG_TAIL_BYTES))
                text = log.read().decode("utf-8", errors="replace")
        except OSError:
            return ""
        lines = [line.rstrip() for line in text.splitlines() if line.strip()]
        return "\n".join(lines[-_LOG_TAIL_LINES:])
