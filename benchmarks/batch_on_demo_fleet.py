"""A 10,000-line batch on the demo fleet while interactive traffic keeps its SLO.

    python benchmarks/batch_on_demo_fleet.py [--lines 10000] [--rate 2] [--baseline-s 60]

Starts ``gearshift serve`` on the built-in demo fleet (simulated H100, A100-80GB x2, L4 x2 and a
CPU node; its batch store in a temporary directory), then measures, in the same run:

1. baseline: interactive traffic alone (``service_tier: priority``, streamed, Poisson at
   ``--rate`` req/s) for ``--baseline-s`` seconds;
2. with the batch: the same interactive traffic while a batch of ``--lines`` short lines
   (``max_tokens`` 16) is submitted through the Batch API and run to completion by the
   dispatcher serve starts.

It prints the batch's wall time and success, which accelerator types served its lines (the
gateway's ``gearshift_requests`` counter, by ``x-gearshift-accelerator``, and the dispatcher's
own tally from its log), and interactive TTFT p50/p99 and SLO attainment without and with the
batch. The interactive load runs in a separate, niced process (clients on other machines).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import openai

from scheduler.config import demo_config, demo_config_text

MODEL = "llama-3.1-8b"
SPAWN = multiprocessing.get_context("spawn")


def _interactive_main(
    url: str, rate: float, seed: int, stop: Event, report: Connection, niceness: int
) -> None:
    """Streamed priority requests at Poisson times until ``stop``; reports (ok, ttft_s)."""
    import aiohttp

    os.nice(niceness)
    rng = random.Random(seed)

    async def main() -> list[tuple[bool, float | None]]:
        answers: list[tuple[bool, float | None]] = []
        body = {
            "model": MODEL,
            "messages": [{"role": "user", "content": "Answer briefly: what is a GPU?"}],
            "max_tokens": 32,
            "stream": True,
            "service_tier": "priority",
        }
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:

            async def one() -> None:
                sent = time.perf_counter()
                ttft = None
                try:
                    async with session.post(f"{url}/v1/chat/completions", json=body) as response:
                        async for line in response.content:
                            if ttft is None and line.startswith(b"data: {"):
                                ttft = time.perf_counter() - sent
                        answers.append((response.status == 200 and ttft is not None, ttft))
                except (aiohttp.ClientError, TimeoutError):
                    answers.append((False, None))

            tasks = []
            while not stop.is_set():
                await asyncio.sleep(rng.expovariate(rate))
                tasks.append(asyncio.create_task(one()))
            await asyncio.gather(*tasks)
        return answers

    report.send(asyncio.run(main()))


class Interactive:
    def __init__(self, url: str, rate: float, seed: int) -> None:
        self._stop = SPAWN.Event()
        self._ours, theirs = SPAWN.Pipe()
        self._process = SPAWN.Process(
            target=_interactive_main, args=(url, rate, seed, self._stop, theirs, 5), daemon=True
        )

    def __enter__(self) -> Interactive:
        self._process.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._process.is_alive():
            self._process.kill()

    def finish(self) -> list[tuple[bool, float | None]]:
        self._stop.set()
        assert self._ours.poll(180), "the interactive load did not finish"
        answers: list[tuple[bool, float | None]] = self._ours.recv()
        self._process.join(10)
        return answers


def _lines(n: int) -> bytes:
    return b"".join(
        json.dumps(
            {
                "custom_id": f"line-{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": MODEL,
                    "messages": [{"role": "user", "content": f"Summarise item {i}."}],
                    "max_tokens": 16,
                },
            }
        ).encode()
        + b"\n"
        for i in range(n)
    )


_SAMPLE = re.compile(r"^gearshift_requests_total\{([^}]*)\} ([0-9.e+]+)$", re.MULTILINE)


def _served(url: str) -> Counter[tuple[str, str]]:
    """Requests answered 200 per (class, accelerator) for MODEL, from the gateway's metrics."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        text = response.read().decode()
    counts: Counter[tuple[str, str]] = Counter()
    for labels, value in _SAMPLE.findall(text):
        found = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        if found.get("model") == MODEL and found.get("code") == "200":
            counts[(found["traffic_class"], found["accelerator"])] += int(float(value))
    return counts


def _summary(answers: list[tuple[bool, float | None]], target_s: float) -> dict[str, Any]:
    ttfts = sorted(t for ok, t in answers if ok and t is not None)
    ok = sum(1 for good, _ in answers if good)

    def pct(q: float) -> float | None:
        return ttfts[min(len(ttfts) - 1, int(q * len(ttfts)))] if ttfts else None

    return {
        "requests": len(answers),
        "success": ok / len(answers) if answers else None,
        "ttft_p50_s": statistics.median(ttfts) if ttfts else None,
        "ttft_p99_s": pct(0.99),
        "within_slo": sum(1 for t in ttfts if t <= target_s) / len(answers) if answers else None,
    }


def _start_serve(tmp: Path) -> tuple[subprocess.Popen[bytes], str, Path]:
    config = tmp / "demo.yaml"
    store = tmp / "batch"
    config.write_text(demo_config_text() + f"\nbatch:\n  store_path: {store}\n")
    session = tmp / "session.json"
    gearshift = Path(sys.executable).parent / "gearshift"
    log = (tmp / "serve.log").open("wb")
    process = subprocess.Popen(
        [str(gearshift), "serve", "-c", str(config), "--port", "0", "--admin-port", "0"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "GEARSHIFT_SESSION_FILE": str(session)},
    )
    deadline = time.monotonic() + 300
    while not session.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"gearshift serve did not start; see {tmp / 'serve.log'}")
        time.sleep(0.2)
    return process, json.loads(session.read_text())["public_url"], store


def run(lines: int, rate: float, baseline_s: float, seed: int) -> dict[str, Any]:
    """Both phases on one serve; its temporary directory stays only if the run fails."""
    tmp = Path(tempfile.mkdtemp(prefix="gearshift-batch-bench-"))
    serve, url, store = _start_serve(tmp)
    try:
        result = _measure(url, store, lines, rate, baseline_s, seed)
    except BaseException:
        print(f"serve log, batch store and dispatcher log kept in {tmp}", file=sys.stderr)
        raise
    finally:
        serve.send_signal(signal.SIGINT)
        serve.wait(120)
    shutil.rmtree(tmp, ignore_errors=True)
    return result


def _measure(
    url: str, store: Path, lines: int, rate: float, baseline_s: float, seed: int
) -> dict[str, Any]:
    target_s = demo_config().traffic_classes.interactive.ttft_s or 0.5
    time.sleep(5)  # the engines' first metrics scrapes
    with Interactive(url, rate, seed) as load:
        time.sleep(baseline_s)
        baseline = _summary(load.finish(), target_s)
    before = _served(url)
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=2)
    # The same arrival schedule as the baseline: TTFT's tail follows the schedule's bursts, and
    # two seeds differ at p99 with no batch at all.
    with Interactive(url, rate, seed) as load:
        started = time.monotonic()
        upload = client.files.create(file=("lines.jsonl", _lines(lines)), purpose="batch")
        batch = client.batches.create(
            input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        while batch.status not in ("completed", "failed", "expired", "cancelled"):
            time.sleep(1.0)
            batch = client.batches.retrieve(batch.id)
        wall_s = time.monotonic() - started
        loaded = _summary(load.finish(), target_s)
    served = _served(url) - before
    tally = re.findall(
        r"this worker's lines were served by (\{[^}]*\})", (store / "dispatcher.log").read_text()
    )
    counts = batch.request_counts
    return {
        "lines": lines,
        "status": batch.status,
        "wall_s": wall_s,
        "completed": counts.completed if counts else 0,
        "failed": counts.failed if counts else 0,
        "batch_by_accelerator": {
            f"{cls}/{acc}": n for (cls, acc), n in sorted(served.items()) if cls != "interactive"
        },
        "dispatcher_tally": tally[-1] if tally else None,
        "interactive_by_accelerator": {
            acc: n for (cls, acc), n in sorted(served.items()) if cls == "interactive"
        },
        "baseline": baseline,
        "with_batch": loaded,
        "ttft_target_s": target_s,
    }


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f} ms"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=2.0, help="interactive requests/s")
    parser.add_argument("--baseline-s", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    result = run(args.lines, args.rate, args.baseline_s, args.seed)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    print(f"\nbatch: {result['lines']} lines, {result['status']} in {result['wall_s']:.0f} s "
          f"({result['lines'] / result['wall_s']:.0f} lines/s); {result['completed']} completed, "
          f"{result['failed']} failed")  # fmt: skip
    total = sum(result["batch_by_accelerator"].values()) or 1
    print("\nbatch lines by class/accelerator (gateway metrics):")
    for name, n in result["batch_by_accelerator"].items():
        print(f"  {name:<24} {n:>7}  {n / total:6.1%}")
    print(f"  dispatcher's own tally: {result['dispatcher_tally']}")
    print(f"\ninteractive ({args.rate:g} req/s, priority, streamed; TTFT target "
          f"{result['ttft_target_s']} s):")  # fmt: skip
    print(f"  {'':<14}{'requests':>9}{'success':>9}{'TTFT p50':>10}{'TTFT p99':>10}{'in SLO':>8}")
    for name in ("baseline", "with_batch"):
        s = result[name]
        print(f"  {name:<14}{s['requests']:>9}{_pct(s['success']):>9}{_ms(s['ttft_p50_s']):>10}"
              f"{_ms(s['ttft_p99_s']):>10}{_pct(s['within_slo']):>8}")  # fmt: skip
    print(f"  interactive served by: {result['interactive_by_accelerator']}")


if __name__ == "__main__":
    main()
