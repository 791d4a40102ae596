"""The sim engine's continuous batcher, on virtual time: admission order, step timing, aborts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from nodes.engines.sim.batcher import Batcher, GenerationRequest, TokenStream
from scheduler.errors import InvalidRequest

pytestmark = pytest.mark.anyio

# Lets the engine loop react to a submit or an abort without finishing any modelled step
# (every step of the fakes here takes at least a millisecond).
SETTLE = 1e-6


@asynccontextmanager
async def engine(batcher: Batcher) -> AsyncIterator[Batcher]:
    task = asyncio.create_task(batcher.run())
    try:
        yield batcher
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def request(prompt: int = 100, output: int = 5, priority: int = 0) -> GenerationRequest:
    return GenerationRequest(
        prompt_tokens=prompt, output_tokens=output, finish_reason="length", priority=priority
    )


async def token_times(stream: TokenStream) -> list[float]:
    """Consume a stream; the loop time at which each token arrived."""
    loop = asyncio.get_running_loop()
    times: list[float] = []
    async for index in stream:
        assert index == len(times)
        times.append(loop.time())
    return times


async def test_first_token_after_one_prefill_pass_then_one_token_per_decode_step(
    linear_steps: Any,
) -> None:
    steps = linear_steps()
    async with engine(Batcher(steps, max_num_seqs=8, time_scale=50.0)) as batcher:
        start = asyncio.get_running_loop().time()
        stream = batcher.submit(request(prompt=200, output=4))
        times = await token_times(stream)

    prefill = steps.prefill_seconds(200) / 50.0
    decode = steps.decode_step_seconds(1, 0) / 50.0
    assert [t - start for t in times] == pytest.approx(
        [prefill, prefill + decode, prefill + 2 * decode, prefill + 3 * decode]
    )
    assert stream.finish_reason == "length"


async def test_decode_steps_take_longer_as_the_batch_grows(linear_steps: Any) -> None:
    steps = linear_steps()
    async with engine(Batcher(steps, max_num_seqs=8)) as batcher:
        alone = await token_times(batcher.submit(request(output=4)))
        crowd = await asyncio.gather(
            *(token_times(batcher.submit(request(output=4))) for _ in range(4))
        )

    assert alone[2] - alone[1] == pytest.approx(steps.decode_step_seconds(1, 0))
    for times in crowd:
        assert times[2] - times[1] == pytest.approx(steps.decode_step_seconds(4, 0))
    assert steps.decode_step_seconds(4, 0) > steps.decode_step_seconds(1, 0)


async def test_a_long_prompt_is_prefilled_in_chunks_between_the_running_requests_steps(
    linear_steps: Any,
) -> None:
    steps = linear_steps()
    loop = asyncio.get_running_loop()
    async with engine(Batcher(steps, max_num_seqs=8, max_num_batched_tokens=100)) as batcher:
        running = asyncio.create_task(token_times(batcher.submit(request(prompt=50, output=30))))
        await asyncio.sleep(0.1)  # it is decoding
        submitted = loop.time()
        long_times = await token_times(batcher.submit(request(prompt=250, output=2)))
        running_times = await running

    # Chunks of 99, 99 and 52 tokens (the running request's decode token takes one of the
    # 100): they add up to the prompt's prefill, with a decode step after each of the first two.
    prefill, step = steps.prefill_seconds(250), steps.decode_step_seconds(1, 0)
    assert long_times[0] - submitted > prefill + 2 * step
    assert long_times[0] - submitted < prefill + 4 * step
    during = [t for t in running_times if submitted < t < long_times[0]]
    assert len(during) >= 3
    gaps = [later - earlier for earlier, later in zip(during, during[1:], strict=False)]
    assert max(gaps) == pytest.approx(steps.prefill_seconds(99) + step)


async def test_waiting_requests_are_admitted_by_priority_then_arrival(linear_steps: Any) -> None:
    # The cache holds 1,000 tokens; each request reserves 600, so one runs at a time.
    async with engine(Batcher(linear_steps(kv_capacity_tokens=1000), max_num_seqs=8)) as batcher:
        first = asyncio.create_task(token_times(batcher.submit(request(500, 100, priority=-100))))
        await asyncio.sleep(SETTLE)
        queued = {
            priority: asyncio.create_task(
                token_times(batcher.submit(request(500, 100, priority=priority)))
            )
            for priority in (10, 0, -10)
        }
        await asyncio.sleep(SETTLE)
        assert (batcher.num_running, batcher.num_waiting) == (1, 3)
        await first
        starts = {priority: (await task)[0] for priority, task in queued.items()}

    assert starts[-10] < starts[0] < starts[10]


async def test_same_priority_is_first_come_first_served(linear_steps: Any) -> None:
    async with engine(Batcher(linear_steps(), max_num_seqs=1)) as batcher:
        tasks = [asyncio.create_task(token_times(batcher.submit(request()))) for _ in range(3)]
        starts = [(await task)[0] for task in tasks]
    assert starts == sorted(starts)


async def test_max_num_seqs_caps_the_running_batch(linear_steps: Any) -> None:
    async with engine(Batcher(linear_steps(), max_num_seqs=2)) as batcher:
        streams = [batcher.submit(request()) for _ in range(3)]
        await asyncio.sleep(SETTLE)
        assert (batcher.num_running, batcher.num_waiting) == (2, 1)
        await asyncio.gather(*(token_times(s) for s in streams))
        assert (batcher.num_running, batcher.num_waiting) == (0, 0)


async def test_urgent_request_preempts_a_less_urgent_one_that_then_resumes(
    linear_steps: Any,
) -> None:
    async with engine(Batcher(linear_steps(kv_capacity_tokens=1000), max_num_seqs=8)) as batcher:
        batch = batcher.submit(request(400, 400, priority=10))
        batch_tokens = asyncio.create_task(token_times(batch))
        await asyncio.sleep(1.0)  # the batch request is well into its decode
        urgent_times = await token_times(batcher.submit(request(300, 10, priority=-10)))
        batch_times = await batch_tokens

    # The urgent request ran while the batch request was out, and the batch request still
    # received each of its 400 tokens exactly once, in order (token_times checks the order).
    assert len(batch_times) == 400
    gap = [later - earlier for earlier, later in zip(batch_times, batch_times[1:], strict=False)]
    paused_at = gap.index(max(gap))
    assert batch_times[paused_at] < urgent_times[0]
    assert urgent_times[-1] < batch_times[paused_at + 1]
    assert batch.finish_reason == "length"


async def test_no_preemption_for_equal_priority(linear_steps: Any) -> None:
    async with engine(Batcher(linear_steps(kv_capacity_tokens=1000), max_num_seqs=8)) as batcher:
        running = asyncio.create_task(token_times(batcher.submit(request(400, 400))))
        await asyncio.sleep(1.0)
        late = await token_times(batcher.submit(request(300, 10)))
        first = await running
    assert late[0] > first[-1]


async def test_abort_frees_the_cache_and_the_slot_for_the_next_request(linear_steps: Any) -> None:
    async with engine(Batcher(linear_steps(kv_capacity_tokens=1000), max_num_seqs=8)) as batcher:
        hog = batcher.submit(request(500, 400))
        await asyncio.sleep(1.0)
        assert batcher.kv_cache_usage == pytest.approx(0.9)
        behind = batcher.submit(request(500, 100))
        await asyncio.sleep(SETTLE)
        assert (batcher.num_running, batcher.num_waiting) == (1, 1)

        aborted_at = asyncio.get_running_loop().time()
        hog.abort()
        assert hog.finish_reason == "abort"
        assert batcher.num_running == 0
        assert batcher.kv_cache_usage == 0.0

        behind_times = await token_times(behind)
        # Admitted at once, not after the hog's remaining tokens.
        assert behind_times[0] < aborted_at + 1.0
        produced = [index async for index in hog]  # the tokens made before the abort, then the end
        assert produced == list(range(len(produced)))
        assert len(produced) < 400


async def test_cancelled_consumer_aborts_its_request(linear_steps: Any) -> None:
    async with engine(Batcher(linear_steps(), max_num_seqs=8)) as batcher:

        async def consume() -> None:
            stream = batcher.submit(request(100, 1000))
            try:
                async for _ in stream:
                    pass
            finally:
                stream.abort()

        consumer = asyncio.create_task(consume())
        await asyncio.sleep(1.0)
        assert batcher.num_running == 1
        consumer.cancel()
        await asyncio.sleep(SETTLE)
        assert (batcher.num_running, batcher.num_waiting, batcher.kv_cache_usage) == (0, 0, 0.0)


async def test_abort_while_waiting_leaves_the_queue(linear_steps: Any) -> None:
    async with engine(Batcher(linear_steps(), max_num_seqs=1)) as batcher:
        running = batcher.submit(request())
        waiting = batcher.submit(request())
        await asyncio.sleep(SETTLE)
        assert batcher.num_waiting == 1
        waiting.abort()
        assert batcher.num_waiting == 0
        assert len(await token_times(running)) == 5
        assert [index async for index in waiting] == []


async def test_idle_engine_does_not_wake_up(linear_steps: Any) -> None:
    loop = asyncio.get_running_loop()
    async with engine(Batcher(linear_steps(), max_num_seqs=8)) as batcher:
        await token_times(batcher.submit(request()))
        before = loop.wakeups  # type: ignore[attr-defined]
        await asyncio.sleep(3600.0)
        # One wake-up for this test's own hour-long sleep; a polling engine would need thousands.
        assert loop.wakeups - before <= 2  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("prompt", "output"),
    [(900, 101), (0, 5), (5, 0)],
    ids=["larger-than-cache", "empty-prompt", "no-output"],
)
async def test_requests_that_can_never_run_are_refused(
    linear_steps: Any, prompt: int, output: int
) -> None:
    batcher = Batcher(linear_steps(kv_capacity_tokens=1000), max_num_seqs=8)
    with pytest.raises(InvalidRequest):
        batcher.submit(request(prompt, output))
    assert batcher.num_waiting == 0
