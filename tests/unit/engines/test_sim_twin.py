"""The sim engine's batcher and the simulator's ``VirtualReplica`` are twins: fed the same
requests at the same times, every request gets its first and last token at the same time, with
long prompts chunked under the token budget, queueing for the KV cache and preemption."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from nodes.accelerators import ACCELERATORS, accelerator
from nodes.engines.sim import batcher as sim_batcher
from nodes.engines.sim import spec as sim_spec
from nodes.engines.sim.batcher import Batcher, GenerationRequest
from nodes.models import Dtype, catalog_model
from nodes.performance import ReplicaPerformance, replica_performance
from scheduler.simulator import step_times as sim_step_times
from scheduler.simulator.engine import EventLoop
from scheduler.simulator.replica import Job, VirtualReplica
from scheduler.simulator.trace import TraceRequest
from scheduler.types import TrafficClass

pytestmark = pytest.mark.anyio

# (arrival s, prompt, output, engine priority). Each arrives while the engine is busy, away from
# step boundaries; the cache holds 14,000 tokens, so the third prompt queues and the urgent one
# preempts.
REQUESTS = [
    (0.0, 3000, 40, 0),
    (0.004, 500, 60, 0),
    (0.011, 7000, 12, 0),
    (0.052, 1200, 30, 10),
    (0.083, 6500, 8, -10),
    (0.121, 90, 25, 0),
    (0.3017, 2600, 15, 0),
]
BUDGET = 2048
CACHE_TOKENS = 14_000


@dataclass(frozen=True)
class SmallCache:
    """Qwen2.5-0.5B on an L4, timed by the performance model, with a small KV cache."""

    perf: ReplicaPerformance
    kv_capacity_tokens: int = CACHE_TOKENS

    def prefill_seconds(self, prompt_tokens: int) -> float:
        return self.perf.prefill_seconds(prompt_tokens)

    def decode_step_seconds(self, batch_size: int, mean_context_tokens: int) -> float:
        return self.perf.decode_step_seconds(batch_size, mean_context_tokens)


def _steps() -> SmallCache:
    model = catalog_model("qwen2.5-0.5b").architecture
    return SmallCache(replica_performance(model, Dtype.BF16, accelerator("L4")))


async def _batcher_times() -> list[tuple[float, float]]:
    loop = asyncio.get_running_loop()
    batcher = Batcher(_steps(), max_num_seqs=8, max_num_batched_tokens=BUDGET)
    engine = asyncio.create_task(batcher.run())

    async def one(arrival: float, prompt: int, output: int, priority: int) -> tuple[float, float]:
        await asyncio.sleep(arrival - loop.time())
        stream = batcher.submit(GenerationRequest(prompt, output, "length", priority))
        times = [loop.time() async for _ in stream]
        assert len(times) == output
        return times[0], times[-1]

    try:
        return list(await asyncio.gather(*(one(*request) for request in REQUESTS)))
    finally:
        engine.cancel()
        with pytest.raises(asyncio.CancelledError):
            await engine


def _replica_times() -> tuple[list[tuple[float, float]], int]:
    replica = VirtualReplica("r", _steps(), max_num_seqs=8, max_num_batched_tokens=BUDGET)
    loop = EventLoop()
    pending: list[int] = []

    def schedule(end: float | None) -> None:
        if end is not None:
            pending[:] = [loop.at(end, lambda now: schedule(replica.finish(now)))]

    def arrive(job: Job) -> None:
        def action(now: float) -> None:
            if replica.idle:
                replica.submit(job, now)
                schedule(replica.start(now))
                return
            sooner = replica.submit(job, now)
            if sooner is not None:
                loop.cancel(pending[0])
                schedule(sooner)

        loop.at(job.request.arrived_at, action)

    jobs = []
    for order, (arrival, prompt, output, priority) in enumerate(REQUESTS):
        request = TraceRequest(arrival, prompt, output, TrafficClass.STANDARD, "qwen2.5-0.5b")
        jobs.append(Job(request, priority, order))
        arrive(jobs[-1])
    loop.run()
    times = []
    for job in jobs:
        assert job.first_token_at is not None and job.finished_at is not None
        times.append((job.first_token_at, job.finished_at))
    return times, replica.preemptions


async def test_the_batcher_and_the_virtual_replica_time_every_token_alike() -> None:
    replica_times, preemptions = _replica_times()
    batcher_times = await _batcher_times()

    assert preemptions >= 1
    assert [first for first, _ in batcher_times] == pytest.approx(
        [first for first, _ in replica_times], rel=1e-9
    )
    assert [last for _, last in batcher_times] == pytest.approx(
        [last for _, last in replica_times], rel=1e-9
    )


def test_both_take_vllms_default_budget_for_every_card() -> None:
    for spec in ACCELERATORS.values():
        assert sim_spec.engine_token_budget(spec) == sim_step_times.engine_token_budget(spec)
    assert sim_batcher.MAX_NUM_BATCHED_TOKENS == sim_step_times.MAX_NUM_BATCHED_TOKENS
