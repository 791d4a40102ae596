"""Real vLLM (the CPU build, a tiny random Llama) behind Gearshift: what the control plane adds
to cold start and what the gateway adds to time to first token, each against a baseline
measured in the same run.

    python benchmarks/real_engine.py [--requests 500] [--concurrency 1,8] [--seed 0]

1. Cold start. Baseline: ``python -m vllm.entrypoints.openai.api_server`` started directly,
   with the argv and environment the controller gives the replica (``replica_launch``, then
   ``vllm_argv`` / ``vllm_env``), until ``/health`` answers. Then ``gearshift serve --config``
   until its session file is written (every replica ready), split at the moment the replica
   actor launched vLLM (the engine's start time in /proc).
2. Gateway latency. Streamed completions (a ~32-token prompt, 16 tokens out, ``ignore_eos``)
   sent to the replica's vLLM directly and through the gateway, in pairs of random order so
   drift hits both, ``--requests`` per target at each ``--concurrency`` level (asyncio +
   aiohttp, one session per target). Same engine both ways: the difference is the gateway.
   Also the CPU time the gateway's process and vLLM's API server process spend per request
   (from /proc, less their idle rate), which contention barely moves.
3. Stops everything it started, writes the raw samples to ``benchmarks/out/real_engine.json``
   and, where matplotlib is installed, a TTFT CDF to ``benchmarks/out/real_engine_ttft.png``.

Reading the latency table on a small machine: vLLM's CPU build binds its model worker to one
core and leaves the rest to everything else (its API server and engine loop, the gateway, Ray,
this client). On 2 cores that is one core for all of them, so a stream often reaches the
client in one piece after the last token ("1-burst"), and TTFT measures who got that core as
much as anyone's code; the CPU table is the steadier measure of the gateway's own cost.
``gearshift serve`` runs in its own session, so that the kernel's per-session CPU groups do not
charge this client's load to the gateway. Compare runs only on the same machine. Needs the
``cpu`` extra; about 3 minutes on a 2-core machine with the defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp

from nodes.engines.vllm import vllm_argv, vllm_env
from scheduler.cli import session_file
from scheduler.config import load_config
from scheduler.controlplane.engine_specs import replica_launch
from scheduler.controlplane.local_cluster import LocalCluster
from scheduler.framework.placement import ReplicaAssignment

GEARSHIFT = Path(sys.executable).parent / "gearshift"
OUT = Path(__file__).resolve().parent / "out"
LOOPBACK = "127.0.0.1"
MODEL = "tiny-llama"
PROMPT_TOKENS = 32
MAX_TOKENS = 16
WARMUP_PER_TARGET = 8
START_TIMEOUT_S = 300.0
IDLE_S = 3.0
TARGETS = ("direct", "gateway")
BURST_FRACTION = 0.9
PROMPT_SOURCE = (
    "Interactive requests ride the fastest cards; batch work soaks up the cheap ones. "
    "Gearshift places model replicas across a mixed fleet of accelerators."
)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _config(weights: Path, port: int, admin_port: int) -> str:
    """examples/cpu-vllm.yaml, with the generated weights and free ports."""
    return f"""
fleet:
  node_groups:
    - {{name: local-cpu, accelerator: CPU, nodes: 1, simulated: false, ownership: owned,
        price_per_node_hour: 0.05}}
models:
  - name: {MODEL}
    engine: vllm
    weights: {weights}
    max_context: 1024
    max_num_seqs: 16
    replicas: 1
    vllm: {{enforce_eager: true, cpu_kv_cache_gib: 1, env: {{HF_HUB_OFFLINE: "1"}}}}
placement: {{start_timeout_s: {START_TIMEOUT_S:g}}}
gateway: {{host: {LOOPBACK}, port: {port}, admin_port: {admin_port}}}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state [0], ppid [1], start [19])."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _start_ticks(pid: int) -> int:
    fields = _proc_stat(pid)
    if fields is None:
        raise SystemExit(f"process {pid} is gone; cannot read its start time")
    return int(fields[19])


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads) so far."""
    fields = _proc_stat(pid)
    if fields is None:
        raise SystemExit(f"process {pid} is gone; cannot read its CPU time")
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _descendants(pid: int) -> dict[int, str]:
    """Every live process below ``pid``, with its start time (pids get reused)."""
    children: dict[int, list[int]] = {}
    started: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        fields = _proc_stat(int(entry.name)) if entry.name.isdigit() else None
        if fields is not None:
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


def _kill_survivors(processes: dict[int, str], what: str) -> None:
    """SIGKILL whichever of ``processes`` (same pid, same start time) still runs; say so."""
    for pid, start in processes.items():
        fields = _proc_stat(pid)
        if fields is not None and fields[19] == start and fields[0] != "Z":
            print(f"warning: process {pid} outlived {what}; killing it", file=sys.stderr)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _tail(log: Path, lines: int = 20) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def _get_json(url: str, token: str | None = None, body: Any = None) -> Any:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers=headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=1.0) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


# --- cold start ----------------------------------------------------------------------------


def direct_command(config: Path, port: int) -> tuple[list[str], dict[str, str]]:
    """The argv and environment the controller would give the config's one replica."""
    cfg = LocalCluster(load_config(config)).config  # CPU cores detected, as serve does
    model, group = cfg.models[0], cfg.fleet.node_groups[0]
    assignment = ReplicaAssignment(
        replica_id="direct",
        model=model.name,
        node_id=f"{group.name}-0",
        accelerator=group.accelerator,
        tensor_parallel=1,
        price_per_hour=0.0,
    )
    launch = replica_launch(cfg, model, group, assignment).engine.vllm
    if launch is None:
        raise SystemExit("the config's model is not a vLLM model")
    return vllm_argv(launch, LOOPBACK, port), vllm_env(launch, ())


def direct_vllm_cold_start(config: Path, log: Path) -> float:
    """Seconds from launching a bare vLLM API server to /health answering; stops it."""
    port = free_port()
    argv, env = direct_command(config, port)
    url = f"http://{LOOPBACK}:{port}"
    started = time.monotonic()
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
            start_new_session=True,  # vLLM forks an engine core: stop the whole group
        )
    try:
        while not _healthy(url):
            if process.poll() is not None:
                raise SystemExit(f"direct vLLM exited with {process.returncode}:\n{_tail(log)}")
            if time.monotonic() - started > START_TIMEOUT_S:
                raise SystemExit(f"direct vLLM not ready in {START_TIMEOUT_S:g} s:\n{_tail(log)}")
            time.sleep(0.05)
        return time.monotonic() - started
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            print("warning: direct vLLM ignored SIGTERM for 30 s", file=sys.stderr)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@dataclass(frozen=True, slots=True)
class Serve:
    """A ready ``gearshift serve`` and what its cold start measured."""

    process: subprocess.Popen[bytes]
    gateway_url: str
    engine_url: str
    engine_pid: int
    ready_s: float
    """Launching serve to its session file (every replica ready)."""
    engine_launched_s: float
    """Launching serve to the replica actor launching vLLM."""


@contextlib.contextmanager
def gearshift_serve(config: Path, tmp: Path) -> Iterator[Serve]:
    """Start ``gearshift serve``, wait for its session file, yield; Ctrl-C it on the way out
    and kill whatever it left behind (nothing, normally)."""
    session, log = tmp / "session.json", tmp / "serve.log"
    argv = [str(GEARSHIFT), "serve", "--config", str(config), "--ready-timeout", "400"]
    env = {**os.environ, session_file.ENVVAR: str(session)}
    started = time.monotonic()
    with log.open("wb") as out:
        # Its own session, like the engines: with the kernel's per-session CPU groups
        # (autogroup), the gateway would otherwise share one CPU share with this client.
        process = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    spawned: dict[int, str] = {}
    snapshot = started
    try:
        while not session.exists():
            if time.monotonic() - snapshot > 1.0:  # for the clean-up, should serve crash
                spawned |= _descendants(process.pid)
                snapshot = time.monotonic()
            if process.poll() is not None:
                raise SystemExit(f"gearshift serve exited with {process.returncode}:\n{_tail(log)}")
            if time.monotonic() - started > 2 * START_TIMEOUT_S:
                raise SystemExit(f"gearshift serve not ready in {2 * START_TIMEOUT_S:g} s")
            time.sleep(0.05)
        ready_s = time.monotonic() - started
        spawned |= _descendants(process.pid)
        found = session_file.read(session)
        status = _get_json(f"{found.admin_url}/admin/v1/status", token=found.admin_token)
        (replica,) = status["replicas"]
        if replica["state"] != "ready":
            raise SystemExit(f"the replica is {replica['state']}: {replica['detail']}")
        ticks = _start_ticks(replica["engine_pid"]) - _start_ticks(process.pid)
        yield Serve(
            process,
            found.public_url,
            replica["url"],
            replica["engine_pid"],
            ready_s,
            ticks / CLOCK_TICKS,
        )
    finally:
        spawned |= _descendants(process.pid)
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                print("warning: gearshift serve ignored Ctrl-C for 120 s", file=sys.stderr)
                process.kill()
                process.wait()
        _kill_survivors(spawned, "gearshift serve")


def warm_imports() -> float:
    """Import vLLM once so neither cold start pays for a cold page cache."""
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "-c", "import vllm.entrypoints.openai.api_server"],
        capture_output=True,
        check=True,
        timeout=300,
    )
    return time.monotonic() - started


# --- gateway latency -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sample:
    target: str
    concurrency: int
    index: int
    """Position in the interleaved send order of its level."""
    sent_s: float
    """When it was sent, in seconds since its level started."""
    ttft_s: float | None
    e2e_s: float | None
    chunks: int
    error: str | None = None


def make_prompt(engine_url: str, tokens: int) -> tuple[str, int]:
    """A prompt of at least ``tokens`` tokens (counted by the engine's /tokenize)."""
    text = " ".join([PROMPT_SOURCE] * 4)
    prompt, count = "", 0
    for cut in [i for i, char in enumerate(text) if char == " "] + [len(text)]:
        prompt = text[:cut]
        tokenized = _get_json(f"{engine_url}/tokenize", body={"model": MODEL, "prompt": prompt})
        count = int(tokenized["count"])
        if count >= tokens:
            break
    return prompt, count


async def stream_once(
    session: aiohttp.ClientSession, url: str, body: dict[str, Any]
) -> tuple[float | None, float | None, int, str | None]:
    """(TTFT, end-to-end seconds, token chunks, error) of one streamed completion."""
    started = time.perf_counter()
    ttft, chunks, finish = None, 0, None
    try:
        async with session.post(f"{url}/v1/completions", json=body) as response:
            if response.status != 200:
                return None, None, 0, f"HTTP {response.status}: {(await response.text())[:200]}"
            async for line in response.content:
                if not line.startswith(b"data: "):
                    continue
                data = line[6:].strip()
                if data == b"[DONE]":
                    break
                choices = json.loads(data).get("choices") or []
                if choices and choices[0].get("text") is not None:
                    if ttft is None:
                        ttft = time.perf_counter() - started
                    chunks += 1
                    finish = choices[0].get("finish_reason") or finish
    except (aiohttp.ClientError, TimeoutError) as exc:
        return None, None, chunks, f"{type(exc).__name__}: {exc}"
    e2e = time.perf_counter() - started
    if finish != "length":
        return ttft, e2e, chunks, f"finish_reason {finish!r} after {chunks} chunks"
    return ttft, e2e, chunks, None


async def _worker(
    queue: Iterator[tuple[int, str]],
    sessions: dict[str, aiohttp.ClientSession],
    urls: dict[str, str],
    body: dict[str, Any],
    concurrency: int,
    samples: list[Sample],
    started: float,
) -> None:
    """Send the next request of the shared send order until there is none."""
    for index, target in queue:
        sent = time.monotonic() - started
        result = await stream_once(sessions[target], urls[target], body)
        samples.append(Sample(target, concurrency, index, sent, *result))


@dataclass(frozen=True, slots=True)
class LevelCpu:
    """CPU time two processes spent during one level, less what they spend idle."""

    concurrency: int
    wall_s: float
    requests: int
    """Per target."""
    gateway_s: float
    """The ``gearshift serve`` process (gateway, admin API, Ray driver); gateway requests only."""
    api_server_s: float
    """vLLM's API server process (not its engine core); serves both targets' requests."""


def _cpu_pair(pids: tuple[int, int]) -> tuple[float, float]:
    return _cpu_s(pids[0]), _cpu_s(pids[1])


async def measure(
    urls: dict[str, str],
    pids: tuple[int, int],
    prompt: str,
    requests: int,
    levels: list[int],
    seed: int,
) -> tuple[list[Sample], list[LevelCpu]]:
    """Latency samples, and the CPU the gateway (``pids[0]``) and vLLM's API server
    (``pids[1]``) spent per level, less their idle rate (measured first, for IDLE_S)."""
    body = {
        "model": MODEL,
        "prompt": prompt,
        "max_tokens": MAX_TOKENS,
        "ignore_eos": True,
        "stream": True,
        "temperature": 0.0,
    }
    rng = random.Random(seed)
    samples: list[Sample] = []
    cpu: list[LevelCpu] = []
    timeout = aiohttp.ClientTimeout(total=120)
    async with contextlib.AsyncExitStack() as stack:
        sessions = {
            target: await stack.enter_async_context(
                aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0))
            )
            for target in TARGETS
        }
        for _ in range(WARMUP_PER_TARGET):  # connections, the engine's first steps
            for target in TARGETS:
                await stream_once(sessions[target], urls[target], body)
        idle_from = _cpu_pair(pids)
        await asyncio.sleep(IDLE_S)
        idle = [(b - a) / IDLE_S for a, b in zip(idle_from, _cpu_pair(pids), strict=True)]
        for concurrency in levels:
            order: list[str] = []
            for _ in range(requests):
                pair = list(TARGETS)
                rng.shuffle(pair)
                order += pair
            queue = iter(enumerate(order))
            started, cpu_from = time.monotonic(), _cpu_pair(pids)
            await asyncio.gather(
                *(
                    _worker(queue, sessions, urls, body, concurrency, samples, started)
                    for _ in range(concurrency)
                )
            )
            wall = time.monotonic() - started
            busy = [
                after - before - rate * wall
                for before, after, rate in zip(cpu_from, _cpu_pair(pids), idle, strict=True)
            ]
            cpu.append(LevelCpu(concurrency, wall, requests, *busy))
            print(
                f"concurrency {concurrency}: {len(order)} requests in {wall:.0f} s", file=sys.stderr
            )
    return samples, cpu


# --- report --------------------------------------------------------------------------------


def _p(values: list[float], q: int) -> float:
    """The q-th percentile (linear interpolation between samples)."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def _one_burst(sample: Sample) -> bool:
    """The first token arrived with the last: the stream came out in one piece (on a small
    machine, the API server or the gateway did not get a core while the engine generated)."""
    assert sample.ttft_s is not None and sample.e2e_s is not None
    return sample.ttft_s >= BURST_FRACTION * sample.e2e_s


def latency_table(samples: list[Sample], levels: list[int]) -> list[str]:
    lines = [
        f"{'target':<9}{'conc':>5}{'TTFT p50':>10}{'TTFT p99':>10}{'e2e p50':>10}"
        f"{'+TTFT p50':>11}{'+TTFT p99':>11}{'p50 ratio':>11}{'1-burst':>9}{'errors':>8}"
    ]
    for level in levels:
        base: tuple[float, float] | None = None
        for target in TARGETS:
            mine = [s for s in samples if s.target == target and s.concurrency == level]
            ok = [s for s in mine if s.error is None and s.ttft_s is not None]
            errors = len(mine) - len(ok)
            if not ok:
                lines.append(f"{target:<9}{level:>5}{'all failed':>12}{errors:>73}")
                continue
            ttft = [1000 * s.ttft_s for s in ok if s.ttft_s is not None]
            e2e = [1000 * s.e2e_s for s in ok if s.e2e_s is not None]
            p50, p99 = _p(ttft, 50), _p(ttft, 99)
            row = f"{target:<9}{level:>5}{p50:>7.1f} ms{p99:>7.1f} ms{_p(e2e, 50):>7.1f} ms"
            if target == "direct":
                base = (p50, p99)
                row += f"{'baseline':>11}{'':>11}{1.0:>11.2f}"
            elif base is not None:
                row += f"{p50 - base[0]:>+8.1f} ms{p99 - base[1]:>+8.1f} ms{p50 / base[0]:>11.2f}"
            else:
                row += f"{'':>33}"
            bursts = 100 * sum(map(_one_burst, ok)) / len(ok)
            lines.append(f"{row}{bursts:>8.0f}%{errors:>8}")
    return lines


def cpu_table(levels: list[LevelCpu]) -> list[str]:
    lines = [f"{'conc':>4}{'gateway':>12}{'vLLM API server':>18}{'ratio':>8}"]
    for level in levels:
        gateway = 1000 * level.gateway_s / level.requests
        api_server = 1000 * level.api_server_s / (len(TARGETS) * level.requests)
        lines.append(
            f"{level.concurrency:>4}{gateway:>9.2f} ms{api_server:>15.2f} ms"
            f"{gateway / api_server:>8.2f}"
        )
    return lines


def write_plot(samples: list[Sample], levels: list[int], path: Path) -> bool:
    """TTFT CDF, direct vs gateway, one panel per concurrency; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    figure, axes = plt.subplots(1, len(levels), figsize=(5.5 * len(levels), 4), squeeze=False)
    for axis, level in zip(axes[0], levels, strict=True):
        for target in TARGETS:
            ttft = sorted(
                1000 * s.ttft_s
                for s in samples
                if s.target == target and s.concurrency == level and s.ttft_s is not None
            )
            if ttft:
                fraction = [(i + 1) / len(ttft) for i in range(len(ttft))]
                axis.step(ttft, fraction, where="post", label=target)
        axis.set_title(f"concurrency {level}")
        axis.set_xlabel("time to first token (ms)")
        axis.set_ylabel("fraction of requests")
        axis.grid(alpha=0.3)
        axis.legend(loc="lower right")
    figure.suptitle("Streamed completions on real vLLM (CPU): direct vs through Gearshift")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # so SIGTERM also runs the clean-up in the finally blocks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500, help="per target and level")
    parser.add_argument("--concurrency", default="1,8", help="comma-separated levels")
    parser.add_argument("--seed", type=int, default=0, help="seed of the send order")
    args = parser.parse_args()
    levels = [int(level) for level in args.concurrency.split(",")]
    command = (
        f"python benchmarks/real_engine.py --requests {args.requests} "
        f"--concurrency {','.join(map(str, levels))} --seed {args.seed}"
    )
    signal.signal(signal.SIGTERM, _interrupt)
    load_before = os.getloadavg()
    OUT.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gearshift-bench-") as name:
        tmp = Path(name)
        weights = tmp / MODEL
        subprocess.run(
            [str(GEARSHIFT), "dev", "tiny-model", str(weights)],
            capture_output=True,
            check=True,
            timeout=300,
        )
        config = tmp / "fleet.yaml"
        config.write_text(_config(weights, free_port(), free_port()))
        print(f"warm-up import of vLLM: {warm_imports():.1f} s", file=sys.stderr)
        direct_s = direct_vllm_cold_start(config, tmp / "direct-vllm.log")
        print(f"direct vLLM ready in {direct_s:.1f} s", file=sys.stderr)
        with gearshift_serve(config, tmp) as serve:
            print(f"gearshift serve ready in {serve.ready_s:.1f} s", file=sys.stderr)
            urls = {"direct": serve.engine_url, "gateway": serve.gateway_url}
            version = str(_get_json(f"{serve.engine_url}/version")["version"])
            prompt, prompt_tokens = make_prompt(serve.engine_url, PROMPT_TOKENS)
            pids = (serve.process.pid, serve.engine_pid)
            samples, cpu = asyncio.run(
                measure(urls, pids, prompt, args.requests, levels, args.seed)
            )
    load_after = os.getloadavg()
    replica_s = serve.ready_s - serve.engine_launched_s
    print(
        f"\nReal vLLM {version} (CPU build), tiny random Llama (2 layers, hidden 256), "
        f"{os.cpu_count()} cores; load average {load_before[0]:.2f} before, "
        f"{load_after[0]:.2f} after"
    )
    print(f"\nCold start, one run each{'':<30}{'seconds':>9}{'ratio':>8}")
    print(f"{'direct vLLM api_server until /health (baseline)':<54}{direct_s:>9.1f}{1.0:>8.2f}")
    print(
        f"{'gearshift serve until ready (session file)':<54}{serve.ready_s:>9.1f}"
        f"{serve.ready_s / direct_s:>8.2f}"
    )
    print(f"{'  launch to the replica actor starting vLLM':<54}{serve.engine_launched_s:>9.1f}")
    print(
        f"{'  replica vLLM start to ready (incl. health polling)':<54}{replica_s:>9.1f}"
        f"{replica_s / direct_s:>8.2f}"
    )
    print(
        f"\nStreamed completions: {prompt_tokens}-token prompt, {MAX_TOKENS} tokens out "
        f"(ignore_eos), {args.requests} per target and level, interleaved, to the same vLLM "
        "replica\ndirect and through the gateway. + = gateway minus direct; 1-burst = streams "
        f"whose first token came after {BURST_FRACTION:.0%} of their time"
    )
    for line in latency_table(samples, levels):
        print(line)
    print(
        "\nCPU per request: process CPU time during the level, less its idle rate, per request "
        "it handled\n(the gateway's own cost, unlike latency barely moved by contention)"
    )
    for line in cpu_table(cpu):
        print(line)

    raw = OUT / "real_engine.json"
    raw.write_text(
        json.dumps(
            {
                "command": command,
                "machine": {
                    "cpus": os.cpu_count(),
                    "platform": platform.platform(),
                    "loadavg_before": load_before,
                    "loadavg_after": load_after,
                },
                "vllm": version,
                "cold_start_s": {
                    "direct_vllm": direct_s,
                    "gearshift_serve": serve.ready_s,
                    "serve_to_engine_launch": serve.engine_launched_s,
                },
                "prompt": prompt,
                "prompt_tokens": prompt_tokens,
                "max_tokens": MAX_TOKENS,
                "cpu": [asdict(level) for level in cpu],
                "samples": [asdict(sample) for sample in samples],
            },
            indent=1,
        )
    )
    plot = OUT / "real_engine_ttft.png"
    plotted = write_plot(samples, levels, plot)
    print(f"\nraw samples: {raw}")
    print(f"plot: {plot}" if plotted else "plot: skipped (matplotlib is not installed)")
    print(f"reproduce: {command}")


if __name__ == "__main__":
    main()
