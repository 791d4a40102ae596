"""The sim engine as a real process on loopback, driven by the official openai SDK."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from nodes.engines.sim import SimEngineSpec, engine_command
from nodes.models import catalog_model

MODEL = "sim-qwen"
HOST = "127.0.0.1"
DEADLINE_S = 20.0


@dataclass
class Engine:
    process: subprocess.Popen[bytes]
    owner: subprocess.Popen[bytes]
    base_url: str

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, trust_env=False, timeout=10.0)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {DEADLINE_S} s waiting for {what}")
        time.sleep(0.05)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture
def engine() -> Iterator[Engine]:
    spec = SimEngineSpec(
        served_model_name=MODEL,
        architecture=catalog_model("qwen2.5-0.5b").architecture,
        accelerator="L4",
        max_model_len=4096,
        time_scale=20.0,
    )
    port = free_port()
    # The engine's owner: a stand-in for the replica actor that the tests can kill.
    owner = subprocess.Popen(["sleep", "300"])
    process = subprocess.Popen(
        engine_command(spec, host=HOST, port=port, parent_pid=owner.pid),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    started = Engine(process, owner, f"http://{HOST}:{port}")
    try:
        with started.http() as http:

            def healthy() -> bool:
                if process.poll() is not None:
                    stderr = process.stderr.read().decode() if process.stderr else ""
                    pytest.fail(f"engine exited with {process.returncode}: {stderr}")
                try:
                    return http.get("/health").status_code == 200
                except httpx.TransportError:
                    return False

            wait_until(healthy, "/health")
        yield started
    finally:
        stop(process)
        stop(owner)
        if process.stderr:
            process.stderr.close()


def metric(http: httpx.Client, series: str) -> float:
    """The value of the one series starting with ``series`` (a name, or a name and labels)."""
    text = http.get("/metrics").text
    prefix = series if "{" in series else series + "{"
    [line] = [line for line in text.splitlines() if line.startswith(prefix)]
    return float(line.rsplit(" ", 1)[1])


def test_openai_sdk_round_trip(engine: Engine) -> None:
    with openai.DefaultHttpxClient(trust_env=False) as http:
        client = openai.OpenAI(
            base_url=engine.base_url + "/v1", api_key="unused", max_retries=0, http_client=http
        )
        assert [model.id for model in client.models.list()] == [MODEL]

        reply = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Hello!"}], max_tokens=20
        )
        assert reply.choices[0].message.content
        assert reply.usage is not None and 1 <= reply.usage.completion_tokens <= 20

        chunks = list(
            client.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": "Hello!"}],
                max_tokens=20,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert streamed == reply.choices[0].message.content
        assert chunks[-1].usage is not None
        assert chunks[-1].usage.completion_tokens == reply.usage.completion_tokens

        completion = client.completions.create(
            model=MODEL, prompt="The fleet", max_tokens=5, extra_body={"ignore_eos": True}
        )
        assert completion.choices[0].finish_reason == "length"
        assert completion.usage is not None and completion.usage.completion_tokens == 5

        with pytest.raises(openai.NotFoundError):
            client.completions.create(model="other", prompt="x")
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model=MODEL, messages=[], max_tokens=1)


LONG_REQUEST = {
    "model": MODEL,
    "messages": [{"role": "user", "content": "Go on for ever."}],
    "max_tokens": 4000,
    "ignore_eos": True,  # about 1.1 s of modelled decode at time_scale 20: never faster
}


def test_disconnect_mid_stream_aborts_the_request(engine: Engine) -> None:
    with engine.http() as http:
        body = LONG_REQUEST | {"stream": True}
        with http.stream("POST", "/v1/chat/completions", json=body) as response:
            lines = response.iter_lines()  # kept: dropping the iterator closes the stream
            assert next(lines).startswith("data: ")
            assert metric(http, "vllm:num_requests_running") == 1.0
        # Leaving the block closed the connection mid-stream.
        wait_until(lambda: metric(http, "vllm:num_requests_running") == 0.0, "the abort")
        assert metric(http, "vllm:kv_cache_usage_perc") == 0.0
        assert metric(http, 'vllm:request_success_total{engine="0",finished_reason="abort"') == 1


def test_disconnect_while_waiting_for_a_whole_reply_aborts_it(engine: Engine) -> None:
    with engine.http() as http:
        with pytest.raises(httpx.ReadTimeout):
            http.post("/v1/chat/completions", json=LONG_REQUEST, timeout=0.2)
        wait_until(lambda: metric(http, "vllm:num_requests_running") == 0.0, "the abort")
        assert metric(http, 'vllm:request_success_total{engine="0",finished_reason="abort"') == 1


def test_sigterm_lets_in_flight_requests_finish_then_exits_cleanly(engine: Engine) -> None:
    with engine.http() as http:
        body = LONG_REQUEST | {"stream": True}
        with http.stream("POST", "/v1/chat/completions", json=body) as response:
            lines = response.iter_lines()
            assert next(lines).startswith("data: ")
            engine.process.send_signal(signal.SIGTERM)
            events = [line for line in lines if line]
    assert events[-1] == "data: [DONE]"
    assert engine.process.wait(timeout=DEADLINE_S) == 0


def test_engine_exits_when_its_owner_dies(engine: Engine) -> None:
    engine.owner.kill()
    engine.owner.wait(timeout=DEADLINE_S)
    assert engine.process.wait(timeout=DEADLINE_S) == 0


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads process states from /proc")
def test_engine_exits_when_its_parent_dies() -> None:
    # A short-lived parent starts the engine with --parent-pid of itself and exits at once;
    # the engine, re-parented, must notice and leave. It prints the engine's pid for us.
    spec = SimEngineSpec(
        served_model_name=MODEL,
        architecture=catalog_model("qwen2.5-0.5b").architecture,
        accelerator="L4",
        max_model_len=4096,
    )
    launcher = (
        "import os, subprocess, sys\n"
        "argv = sys.argv[1:] + ['--parent-pid', str(os.getpid())]\n"
        "child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
        "print(child.pid, flush=True)\n"
    )
    command = engine_command(spec, host=HOST, port=free_port())
    parent = subprocess.run(
        [sys.executable, "-c", launcher, *command], capture_output=True, check=True, timeout=30
    )
    engine_pid = int(parent.stdout)
    try:
        wait_until(lambda: not _running(engine_pid), "the orphaned engine to exit")
    finally:
        if _running(engine_pid):
            os.kill(engine_pid, signal.SIGKILL)


def _running(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie (an exited child nobody has reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False
