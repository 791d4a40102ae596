"""Continuous batching for a simulated replica, like vLLM v1 with ``--scheduling-policy priority``.

One loop task is the engine. Each iteration is one vLLM step with chunked prefill under a token
budget of ``max_num_batched_tokens`` (vLLM's default for the card:
``nodes.engines.sim.spec.engine_token_budget``), laid out as a prefill pass followed by a decode
step. It

1. **admits** waiting requests in (priority, arrival) order, lower priority values first, while
   budget is left after one token per decoding request and the prefills in progress, their KV
   reservation fits the cache and fewer than ``max_num_seqs`` run. The head of the queue blocks
   everything behind it (no skipping ahead), except that it may **preempt** running requests of
   strictly lower priority (higher value), latest arrival of the lowest priority first, when that
   frees enough room;
2. runs one **prefill pass** that gives that budget to the prompts being prefilled, in admission
   order, each a chunk of what is left. A chunk costs what it adds to its prompt's prefill,
   ``prefill_seconds(done + chunk) - prefill_seconds(done)`` (the first chunk
   ``prefill_seconds(chunk)``): a prompt costs ``prefill_seconds(context)`` however it is cut,
   and the prompts of one pass add up, since each attends only to itself. A request whose last
   chunk is in the pass emits its next token at the end of the pass (for a new request that is
   its first token, so TTFT = queueing + its chunks and the steps between them);
3. runs one **decode step** over every running request whose prefill is complete, costing
   ``decode_step_seconds(batch size, mean context tokens rounded down)``; each emits one token.

A step the model says takes ``t`` seconds sleeps ``t / time_scale`` on the event loop's clock (steps
are laid end to end, so timer granularity does not add up), and every timestamp comes from
``loop.time()``, so tests run the batcher on a virtual-time loop. With
nothing to run the loop awaits an event: an idle engine uses no CPU.

Simplifications, stated so the simulator, the tests and readers agree:

* a request reserves KV for its prompt plus its whole output at admission instead of growing
  block by block, so a running request never runs out of cache; a request whose reservation
  exceeds the whole cache is refused at submission;
* preemption is by recompute: the victim frees its reservation and returns to the waiting queue
  at its original place; on re-admission its prefill pass covers its prompt plus the tokens it
  had produced, and tokens already streamed are not sent again;
* a step's prefill chunks and decode tokens run as two phases laid end to end, where vLLM runs
  them in one forward pass: the decode step pays the weight read and step overhead again, and
  each prompt of a pass pays the per-pass overhead of its own ``prefill_seconds``. Both err
  slow, as the capacity model does (``scheduler.placement.capacity``: one prefill per request,
  decode steps on top).

Invariants: tokens of one request are emitted in order, exactly ``output_tokens`` of them unless
it is aborted; reserved KV never exceeds ``kv_capacity_tokens``; at most ``max_num_seqs`` run.
All methods must be called from the event loop's thread.
"""

from __future__ import annotations

import asyncio
import enum
import heapq
import itertools
import math
from dataclasses import dataclass, field
from typing import Protocol

from scheduler.errors import InvalidRequest

ABORT = "abort"
MAX_LAG_S = 0.005
MAX_NUM_BATCHED_TOKENS = 2048
"""vLLM's token budget per step for its OpenAI server on most cards
(``nodes.engines.sim.spec.engine_token_budget``)."""


class StepTimeModel(Protocol):
    """What the batcher needs from the performance model of one replica."""

    @property
    def kv_capacity_tokens(self) -> int:
        """Tokens of KV cache the replica holds in total."""
        ...

    def prefill_seconds(self, prompt_tokens: int) -> float:
        """Seconds one prefill pass over ``prompt_tokens`` tokens takes."""
        ...

    def decode_step_seconds(self, batch_size: int, mean_context_tokens: int) -> float:
        """Seconds one decode step takes for ``batch_size`` sequences of that mean context."""
        ...


class BatchObserver(Protocol):
    """Receives what happens to requests, e.g. to keep Prometheus metrics; must not block."""

    def first_token(self, prompt_tokens: int, seconds_since_arrival: float) -> None:
        """A request emitted its first token; its prompt has been prefilled."""

    def next_token(self, seconds_since_previous: float) -> None:
        """A request emitted a token after its first."""

    def finished(self, finish_reason: str, seconds_since_arrival: float) -> None:
        """A request ended: ``stop``/``length`` when complete, ``abort`` when its consumer left."""

    def preempted(self) -> None:
        """A running request was preempted by a more urgent one."""


class _NullObserver:
    """An observer that ignores everything."""

    def first_token(self, prompt_tokens: int, seconds_since_arrival: float) -> None:
        pass

    def next_token(self, seconds_since_previous: float) -> None:
        pass

    def finished(self, finish_reason: str, seconds_since_arrival: float) -> None:
        pass

    def preempted(self) -> None:
        pass


@dataclass(frozen=True)
class GenerationRequest:
    """One request as the batcher sees it: sizes, priority and how it ends when complete."""

    prompt_tokens: int
    output_tokens: int
    finish_reason: str
    priority: int = 0

    @property
    def kv_tokens(self) -> int:
        """KV the request reserves while it runs: prompt plus whole output."""
        return self.prompt_tokens + self.output_tokens


class _State(enum.Enum):
    WAITING = enum.auto()
    RUNNING = enum.auto()
    DONE = enum.auto()


@dataclass(eq=False)
class _Sequence:
    """Mutable progress of one request inside the batcher."""

    request: GenerationRequest
    order: int
    arrival: float
    state: _State = _State.WAITING
    produced: int = 0
    prefill_left: int = 0
    """Context tokens still to prefill: set at admission, 0 once the request decodes."""
    last_token_at: float = 0.0
    finish_reason: str | None = None
    tokens: asyncio.Queue[int | None] = field(default_factory=asyncio.Queue)

    @property
    def context_tokens(self) -> int:
        return self.request.prompt_tokens + self.produced

    @property
    def rank(self) -> tuple[int, int]:
        """Scheduling order: lower priority value first, then earlier arrival."""
        return (self.request.priority, self.order)


class TokenStream:
    """The tokens of one submitted request, as an async iterator of token indices 0, 1, 2, ...

    The iterator ends when the request finishes (see ``finish_reason``). ``abort()`` ends the
    request early and frees its KV; it is idempotent and a no-op after the request finished.
    Consumers wrap iteration in ``try/finally: stream.abort()`` so that a cancelled consumer (a
    client that disconnected) aborts its request.
    """

    def __init__(self, batcher: Batcher, sequence: _Sequence) -> None:
        self._batcher = batcher
        self._sequence = sequence
        self._ended = False

    @property
    def finish_reason(self) -> str | None:
        """``stop``, ``length`` or ``abort`` once the request ended, else None."""
        return self._sequence.finish_reason

    def __aiter__(self) -> TokenStream:
        return self

    async def __anext__(self) -> int:
        if self._ended:
            raise StopAsyncIteration
        index = await self._sequence.tokens.get()
        if index is None:
            self._ended = True
            raise StopAsyncIteration
        return index

    def abort(self) -> None:
        """End the request now if it has not finished; frees its KV and its running slot."""
        self._batcher._abort(self._sequence)


class Batcher:
    """The engine loop of one simulated replica; see the module docstring for the schedule."""

    def __init__(
        self,
        model: StepTimeModel,
        *,
        max_num_seqs: int,
        max_num_batched_tokens: int = MAX_NUM_BATCHED_TOKENS,
        time_scale: float = 1.0,
        observer: BatchObserver | None = None,
    ) -> None:
        if model.kv_capacity_tokens < 1:
            raise ValueError(f"kv_capacity_tokens must be positive, got {model.kv_capacity_tokens}")
        if max_num_seqs < 1:
            raise ValueError(f"max_num_seqs must be positive, got {max_num_seqs}")
        if max_num_batched_tokens < 1:
            raise ValueError(
                f"max_num_batched_tokens must be positive, got {max_num_batched_tokens}"
            )
        if not time_scale > 0:
            raise ValueError(f"time_scale must be positive, got {time_scale}")
        self._model = model
        self._capacity = model.kv_capacity_tokens
        self._max_num_seqs = max_num_seqs
        self._budget = max_num_batched_tokens
        self._time_scale = time_scale
        self._observer: BatchObserver = observer or _NullObserver()
        self._waiting: list[tuple[tuple[int, int], _Sequence]] = []
        self._num_waiting = 0
        self._running: dict[int, _Sequence] = {}
        self._prefilling: dict[int, _Sequence] = {}
        """Running requests part-way through their prefill, in admission order."""
        self._prefill_tokens = 0
        """Tokens those requests have left to prefill."""
        self._reserved = 0
        self._orders = itertools.count()
        self._wakeup = asyncio.Event()
        self._timeline = -math.inf

    @property
    def kv_capacity_tokens(self) -> int:
        """Tokens of KV cache this replica holds."""
        return self._capacity

    @property
    def num_running(self) -> int:
        """Requests admitted and generating."""
        return len(self._running)

    @property
    def num_waiting(self) -> int:
        """Requests queued for admission, preempted ones included."""
        return self._num_waiting

    @property
    def kv_cache_usage(self) -> float:
        """Fraction of the KV cache reserved by running requests, in [0, 1]."""
        return self._reserved / self._capacity

    def check(self, request: GenerationRequest) -> None:
        """Raise ``InvalidRequest`` if the request could never run here.

        That is when its prompt plus output exceed the whole KV cache, or a size is not positive.
        """
        if request.prompt_tokens < 1 or request.output_tokens < 1:
            raise InvalidRequest("A request needs at least one prompt token and one output token.")
        if request.kv_tokens > self._capacity:
            raise InvalidRequest(
                f"The request needs {request.kv_tokens} tokens of KV cache "
                f"({request.prompt_tokens} prompt + {request.output_tokens} output), but this "
                f"replica holds only {self._capacity}."
            )

    def submit(self, request: GenerationRequest) -> TokenStream:
        """Queue a request and return its token stream; raises like ``check``."""
        self.check(request)
        sequence = _Sequence(request, next(self._orders), asyncio.get_running_loop().time())
        self._enqueue(sequence)
        self._wakeup.set()
        return TokenStream(self, sequence)

    async def run(self) -> None:
        """Run the engine loop until cancelled."""
        while True:
            self._admit()
            prefilled = self._budget > self._decoding and bool(self._prefilling)
            if prefilled:
                await self._prefill()
            if self._decoding:
                await self._decode()
            elif not prefilled:
                # Nothing runs and nothing can be admitted: sleep until a submit.
                self._wakeup.clear()
                await self._wakeup.wait()

    # -- queue -------------------------------------------------------------------------------

    def _enqueue(self, sequence: _Sequence) -> None:
        sequence.state = _State.WAITING
        heapq.heappush(self._waiting, (sequence.rank, sequence))
        self._num_waiting += 1

    def _head(self) -> _Sequence | None:
        """The most urgent waiting request; drops entries of requests aborted while waiting."""
        while self._waiting:
            sequence = self._waiting[0][1]
            if sequence.state is _State.WAITING:
                return sequence
            heapq.heappop(self._waiting)
        return None

    def _fits(self, kv_tokens: int, *, freed_tokens: int = 0, freed_slots: int = 0) -> bool:
        free_tokens = self._capacity - self._reserved + freed_tokens
        free_slots = self._max_num_seqs - len(self._running) + freed_slots
        return kv_tokens <= free_tokens and free_slots >= 1

    def _victims(self, sequence: _Sequence) -> list[_Sequence] | None:
        """Running requests to preempt so ``sequence`` fits, least urgent first; None if none do."""
        candidates = sorted(
            (s for s in self._running.values() if s.request.priority > sequence.request.priority),
            key=lambda s: s.rank,
            reverse=True,
        )
        victims: list[_Sequence] = []
        freed = 0
        for candidate in candidates:
            victims.append(candidate)
            freed += candidate.request.kv_tokens
            if self._fits(sequence.request.kv_tokens, freed_tokens=freed, freed_slots=len(victims)):
                return victims
        return None

    @property
    def _decoding(self) -> int:
        """Running requests whose prefill is complete."""
        return len(self._running) - len(self._prefilling)

    def _admit(self) -> None:
        """Admit waiting requests while budget is left after the decoding requests and the
        prefills in progress (vLLM's waiting queue takes what the running ones leave of it)."""
        while (
            self._budget > self._decoding + self._prefill_tokens
            and (head := self._head()) is not None
        ):
            if not self._fits(head.request.kv_tokens):
                victims = self._victims(head)
                if victims is None:
                    break
                for victim in victims:
                    self._release(victim)
                    self._enqueue(victim)
                    self._observer.preempted()
            heapq.heappop(self._waiting)
            self._num_waiting -= 1
            head.state = _State.RUNNING
            self._running[head.order] = head
            self._reserved += head.request.kv_tokens
            head.prefill_left = head.context_tokens
            self._prefilling[head.order] = head
            self._prefill_tokens += head.prefill_left

    def _release(self, sequence: _Sequence) -> None:
        del self._running[sequence.order]
        self._reserved -= sequence.request.kv_tokens
        if self._prefilling.pop(sequence.order, None) is not None:
            self._prefill_tokens -= sequence.prefill_left

    # -- steps -------------------------------------------------------------------------------

    async def _prefill(self) -> None:
        """Give the budget left after the decoding requests to the prefills in progress, in
        admission order; sleep the pass; emit for the requests whose prefill it completes."""
        budget = self._budget - self._decoding
        seconds = 0.0
        completed: list[_Sequence] = []
        taken = 0
        for sequence in self._prefilling.values():
            chunk = min(sequence.prefill_left, budget - taken)
            done = sequence.context_tokens - sequence.prefill_left
            cost = self._model.prefill_seconds(done + chunk)
            seconds += cost - self._model.prefill_seconds(done) if done else cost
            sequence.prefill_left -= chunk
            taken += chunk
            if not sequence.prefill_left:
                completed.append(sequence)
            if taken == budget:
                break
        for sequence in completed:
            del self._prefilling[sequence.order]
        self._prefill_tokens -= taken
        await self._sleep(seconds)
        self._emit(completed)

    async def _decode(self) -> None:
        batch = [sequence for sequence in self._running.values() if not sequence.prefill_left]
        mean_context = sum(sequence.context_tokens for sequence in batch) // len(batch)
        await self._sleep(self._model.decode_step_seconds(len(batch), mean_context))
        self._emit(batch)

    async def _sleep(self, modelled_seconds: float) -> None:
        """Sleep one step's share of the timeline.

        Steps are laid end to end on an ideal timeline rather than each lasting "now + t", so
        that timer granularity cancels out instead of adding up: uvloop fires sub-millisecond
        timers early, epoll fires them late, and at ``time_scale`` 20 a decode step is well
        under a millisecond. A timeline more than ``MAX_LAG_S`` behind (after an idle spell, or
        on a starved CPU) restarts from now rather than racing to catch up.
        """
        now = asyncio.get_running_loop().time()
        start = self._timeline if self._timeline >= now - MAX_LAG_S else now
        self._timeline = start + modelled_seconds / self._time_scale
        await asyncio.sleep(max(0.0, self._timeline - now))

    def _emit(self, batch: list[_Sequence]) -> None:
        """Give each still-running request of ``batch`` its next token; finish the complete ones."""
        now = asyncio.get_running_loop().time()
        for sequence in batch:
            if sequence.state is not _State.RUNNING:
                continue  # aborted during the step
            if sequence.produced == 0:
                self._observer.first_token(sequence.request.prompt_tokens, now - sequence.arrival)
            else:
                self._observer.next_token(now - sequence.last_token_at)
            sequence.tokens.put_nowait(sequence.produced)
            sequence.produced += 1
            sequence.last_token_at = now
            if sequence.produced == sequence.request.output_tokens:
                self._release(sequence)
                self._finish(sequence, sequence.request.finish_reason, now)

    def _finish(self, sequence: _Sequence, reason: str, now: float) -> None:
        sequence.state = _State.DONE
        sequence.finish_reason = reason
        sequence.tokens.put_nowait(None)
        self._observer.finished(reason, now - sequence.arrival)

    def _abort(self, sequence: _Sequence) -> None:
        if sequence.state is _State.DONE:
            return
        if sequence.state is _State.RUNNING:
            self._release(sequence)
        else:
            self._num_waiting -= 1  # its heap entry is dropped lazily by _head()
        self._finish(sequence, ABORT, asyncio.get_running_loop().time())
