"""One replica in virtual time, batching like the live sim engine (``nodes.engines.sim.batcher``).

Each iteration is one vLLM step with chunked prefill under a token budget of
``max_num_batched_tokens`` (vLLM's default for the card:
``scheduler.simulator.step_times.engine_token_budget``), laid out as a
prefill pass followed by a decode step:

1. The budget left after one token per decoding job goes to prefill: first to prompts part-way
   through their prefill (in admission order), then to waiting jobs. Those are admitted in
   (engine priority, arrival) order while budget is left, their KV reservation (prompt + output)
   fits the cache and fewer than ``max_num_seqs`` run; the head of the queue blocks the rest,
   except that it may preempt running jobs of strictly lower priority (latest arrival of the
   least urgent first) by recompute. Each prompt takes a chunk of what budget is left. A chunk
   costs what it adds to its prompt's prefill, ``prefill_seconds(done + chunk) -
   prefill_seconds(done)`` (the first chunk ``prefill_seconds(chunk)``): a prompt costs
   ``prefill_seconds(context)`` however it is cut, and the prompts of one pass add up, since each
   attends only to itself. A job whose last chunk is in the pass emits one token at its end.
2. Every decoding job (its prefill complete) gets one decode step costing
   ``decode_step_seconds(batch, mean context // 1)``.

Decode steps between two changes of the batch are one *run*: the batch, and so admission, can
only change when a job finishes or prefill work is due. So a run lasts until its first job
finishes (one step while a prompt is part-way through its prefill), timed step by step in chunks
of doubling length (one event per chunk), and ends early only when ``submit`` queues a job
admissible at a step boundary. The step times, token counts and load the gateway sees are
exactly those of one event per decode step.

As in the live engine, the two phases of a step and the prompts of a pass pay their overheads
separately, erring slow like the capacity model (``scheduler.placement.capacity``), which
charges one ``prefill_seconds(prompt)`` per request and decode steps on top.

Invariants: reserved KV never exceeds the capacity; at most ``max_num_seqs`` run; a pass
prefills at most the budget less the decoding jobs; a job emits exactly ``output_tokens``
tokens, none before its prefill is complete; phases are laid end to end and never overlap.
"""

from __future__ import annotations

import bisect
import enum
import heapq
from dataclasses import dataclass

from scheduler.simulator.step_times import MAX_NUM_BATCHED_TOKENS, CachedStepTimes, StepTimeModel
from scheduler.simulator.trace import TraceRequest
from scheduler.types import TrafficClass


@dataclass(eq=False, slots=True)
class Job:
    """A request's progress on a replica; ``order`` is its arrival rank there."""

    request: TraceRequest
    priority: int
    order: int
    produced: int = 0
    prefill_left: int = 0
    """Context tokens still to prefill: set at admission, 0 once the job decodes."""
    first_token_at: float | None = None
    finished_at: float | None = None

    @property
    def kv_tokens(self) -> int:
        return self.request.prompt_tokens + self.request.output_tokens

    @property
    def context_tokens(self) -> int:
        return self.request.prompt_tokens + self.produced

    @property
    def rank(self) -> tuple[int, int]:
        return (self.priority, self.order)


FIRST_CHUNK_STEPS = 16
"""Decode steps a run times ahead at first; each further chunk doubles."""


class _Phase(enum.Enum):
    PREFILL = enum.auto()
    DECODE = enum.auto()


class VirtualReplica:
    """The batching state of one replica; the event loop calls ``start`` and ``finish``."""

    def __init__(
        self,
        replica_id: str,
        model: StepTimeModel,
        *,
        max_num_seqs: int,
        max_num_batched_tokens: int = MAX_NUM_BATCHED_TOKENS,
    ) -> None:
        if max_num_batched_tokens < 1:
            raise ValueError(f"max_num_batched_tokens must be >= 1, got {max_num_batched_tokens}")
        self.replica_id = replica_id
        self._model = model if isinstance(model, CachedStepTimes) else CachedStepTimes(model)
        self._capacity = model.kv_capacity_tokens
        self._max_num_seqs = max_num_seqs
        self._budget = max_num_batched_tokens
        self._waiting: list[tuple[tuple[int, int], Job]] = []
        self._running: dict[int, Job] = {}
        self._prefilling: dict[int, Job] = {}
        """Running jobs part-way through their prefill, in admission order."""
        self._prefill_tokens = 0
        """Tokens those jobs have left to prefill."""
        self._reserved = 0
        self._phase: _Phase | None = None
        self._batch: list[Job] = []
        self._started = 0.0
        self._ends: list[float] = []
        """End time of each step of the phase in progress timed so far (one for a prefill)."""
        self._steps = 0
        """Steps the phase in progress runs (a decode run's may be cut short)."""
        self._mean_context = 0
        """A decode run's mean context (floored) at its first step."""
        self._chunk = FIRST_CHUNK_STEPS
        self.busy_s = 0.0
        self.tokens_generated = 0
        self.preemptions = 0
        self.interactive = 0
        """Interactive jobs submitted and not finished."""
        self.interactive_until: float | None = None
        """When the last interactive job finished."""
        self.version = 0
        """Changes whenever ``running``, ``waiting`` or ``kv_usage`` may have changed."""

    # -- load, as the gateway's scrape of the engine shows it --------------------------------

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def kv_usage(self) -> float:
        return self._reserved / self._capacity if self._capacity > 0 else 1.0

    @property
    def max_num_batched_tokens(self) -> int:
        """The token budget of one iteration: decode tokens plus prefill chunks."""
        return self._budget

    @property
    def idle(self) -> bool:
        """No phase in progress: a submit must ``start`` the next iteration."""
        return self._phase is None

    def refusal(self, request: TraceRequest) -> str | None:
        """Why the engine would refuse ``request`` outright (as the batcher's ``check``)."""
        needed = request.prompt_tokens + request.output_tokens
        if needed > self._capacity:
            return (
                f"{self.replica_id}: the request needs {needed} tokens of KV cache, but this "
                f"replica holds only {self._capacity}"
            )
        return None

    def submit(self, job: Job, now: float) -> float | None:
        """Queue ``job`` at ``now``. When it cuts the decode run in progress short (the queue's
        head can be admitted at the next step boundary), the run's new end; else None."""
        heapq.heappush(self._waiting, (job.rank, job))
        self.interactive += job.request.traffic_class is TrafficClass.INTERACTIVE
        self.version += 1
        if self._phase is not _Phase.DECODE:
            return None
        if not self._prefill_due():
            return None  # nothing can be admitted before a job of the run finishes
        ends = self._ends
        boundary = bisect.bisect_left(ends, now)
        if boundary >= len(ends) - 1:
            self._steps = len(ends)  # it stops at the end already scheduled
            return None
        del ends[boundary + 1 :]
        self._steps = len(ends)
        return ends[-1]

    # -- iterations ---------------------------------------------------------------------------

    def start(self, now: float) -> float | None:
        """Admit, then begin the prefill pass (or else a decode run); its end time, or None
        when there is nothing to run."""
        self._admit()
        budget = self._budget - self._decoding
        if budget > 0 and self._prefilling:
            completed, seconds = self._take_chunks(budget)
            self._begin(_Phase.PREFILL, completed, now, 1, 0)
            self._ends.append(now + seconds)
            return self._ends[-1]
        return self._begin_decode(now)

    def finish(self, now: float) -> float | None:
        """At ``now``, the end of the steps timed so far: time the decode run's next steps and
        return their end, or end the phase (emit its tokens) and begin the next one."""
        kind = self._phase
        if kind is None:
            raise RuntimeError(f"{self.replica_id}: no phase in progress")
        if len(self._ends) < self._steps:
            return self._time_steps()
        self._phase = None
        self.busy_s += now - self._started
        self._emit(self._batch, len(self._ends), now)
        if kind is _Phase.PREFILL:
            end = self._begin_decode(now)
            return end if end is not None else self.start(now)
        return self.start(now)

    @property
    def _decoding(self) -> int:
        """Running jobs whose prefill is complete."""
        return len(self._running) - len(self._prefilling)

    def _take_chunks(self, budget: int) -> tuple[list[Job], float]:
        """Give ``budget`` tokens to the prefills in progress, in admission order; the jobs
        whose prefill this completes, and the pass's seconds."""
        model = self._model
        seconds = 0.0
        completed: list[Job] = []
        taken = 0
        for job in self._prefilling.values():
            chunk = min(job.prefill_left, budget - taken)
            seconds += model.prefill_chunk_seconds(job.context_tokens - job.prefill_left, chunk)
            job.prefill_left -= chunk
            taken += chunk
            if not job.prefill_left:
                completed.append(job)
            if taken == budget:
                break
        for job in completed:
            del self._prefilling[job.order]
        self._prefill_tokens -= taken
        return completed, seconds

    def _begin_decode(self, now: float) -> float | None:
        """Begin a decode run up to the first job's last token (the batch is fixed until then
        unless ``submit`` cuts the run short); the end of its first chunk of steps."""
        if not self._decoding:
            return None
        if self._prefilling:
            batch = [job for job in self._running.values() if not job.prefill_left]
        else:
            batch = list(self._running.values())
        steps = min(job.request.output_tokens - job.produced for job in batch)
        if self._prefill_due():
            steps = 1  # a prompt to prefill: after one decode step
        # Each step adds one token to every context, so the mean (floored) grows by one.
        mean_context = sum(job.context_tokens for job in batch) // len(batch)
        self._begin(_Phase.DECODE, batch, now, steps, mean_context)
        return self._time_steps()

    def _begin(
        self, kind: _Phase, batch: list[Job], now: float, steps: int, mean_context: int
    ) -> None:
        self._phase = kind
        self._batch = batch
        self._started = now
        self._ends = []
        self._steps = steps
        self._mean_context = mean_context
        self._chunk = FIRST_CHUNK_STEPS

    def _time_steps(self) -> float:
        """Time the decode run's next chunk of steps (chunks double, so a run that ``submit``
        cuts short has timed at most about twice the steps it ran); their end."""
        ends = self._ends
        done = len(ends)
        count = min(self._chunk, self._steps - done)
        self._chunk *= 2
        start = ends[-1] if ends else self._started
        ends.extend(
            self._model.decode_ends(len(self._batch), self._mean_context + done, count, start)
        )
        return ends[-1]

    def _emit(self, batch: list[Job], steps: int, now: float) -> None:
        # Admission (and so preemption) happens only between phases: every job of the batch
        # is still running, its prefill complete, and none has fewer than ``steps`` tokens left.
        for job in batch:
            if job.first_token_at is None:
                job.first_token_at = now
            job.produced += steps
            if job.produced == job.request.output_tokens:
                self._release(job)
                if job.request.traffic_class is TrafficClass.INTERACTIVE:
                    self.interactive -= 1
                    self.interactive_until = now
                job.finished_at = now
        self.tokens_generated += steps * len(batch)

    # -- admission ----------------------------------------------------------------------------

    def _fits(self, kv_tokens: int, *, freed_tokens: int = 0, freed_slots: int = 0) -> bool:
        free_tokens = self._capacity - self._reserved + freed_tokens
        free_slots = self._max_num_seqs - len(self._running) + freed_slots
        return kv_tokens <= free_tokens and free_slots >= 1

    def _admissible(self) -> bool:
        """The queue's head would be admitted (perhaps by preemption) at a step boundary."""
        if not self._waiting or self._budget <= self._decoding + self._prefill_tokens:
            return False
        head = self._waiting[0][1]
        return self._fits(head.kv_tokens) or self._victims(head) is not None

    def _prefill_due(self) -> bool:
        """The next iteration runs a prefill pass: budget is left after the decoding jobs, and a
        prompt is part-way through its prefill or the queue's head would be admitted."""
        if self._budget <= self._decoding:
            return False
        return bool(self._prefilling) or self._admissible()

    def _victims(self, job: Job) -> list[Job] | None:
        candidates = sorted(
            (j for j in self._running.values() if j.priority > job.priority),
            key=lambda j: j.rank,
            reverse=True,
        )
        victims: list[Job] = []
        freed = 0
        for candidate in candidates:
            victims.append(candidate)
            freed += candidate.kv_tokens
            if self._fits(job.kv_tokens, freed_tokens=freed, freed_slots=len(victims)):
                return victims
        return None

    def _admit(self) -> None:
        """Admit waiting jobs while budget is left after the decoding jobs and the prefills in
        progress (vLLM's waiting queue takes what the running requests leave of the budget)."""
        admitted = False
        while self._waiting and self._budget > self._decoding + self._prefill_tokens:
            head = self._waiting[0][1]
            if not self._fits(head.kv_tokens):
                victims = self._victims(head)
                if victims is None:
                    break
                for victim in victims:
                    self._release(victim)
                    heapq.heappush(self._waiting, (victim.rank, victim))
                    self.preemptions += 1
            heapq.heappop(self._waiting)
            self._running[head.order] = head
            self._reserved += head.kv_tokens
            head.prefill_left = head.context_tokens
            self._prefilling[head.order] = head
            self._prefill_tokens += head.prefill_left
            admitted = True
        if admitted:
            self.version += 1

    def _release(self, job: Job) -> None:
        del self._running[job.order]
        self._reserved -= job.kv_tokens
        if self._prefilling.pop(job.order, None) is not None:
            self._prefill_tokens -= job.prefill_left
        self.version += 1
