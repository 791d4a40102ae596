"""One replica in virtual time, batching like the live sim engine (``nodes.engines.sim.batcher``).

Each iteration it admits waiting jobs in (engine priority, arrival) order while their KV
reservation (prompt + output) fits the cache and fewer than ``max_num_seqs`` run; the head of
the queue blocks the rest, except that it may preempt running jobs of strictly lower priority
(latest arrival of the least urgent first) by recompute. Newly admitted jobs get one prefill
pass costing ``prefill_seconds(their context tokens)``, emitting one token each; then every
running job gets one decode step costing ``decode_step_seconds(batch, mean context // 1)``.

Invariants: reserved KV never exceeds the capacity; at most ``max_num_seqs`` run; a job emits
exactly ``output_tokens`` tokens; phases are laid end to end and never overlap.
"""

from __future__ import annotations

import enum
import heapq
from dataclasses import dataclass
from typing import Protocol

from scheduler.simulator.trace import TraceRequest


class StepTimeModel(Protocol):
    """What a replica needs from the performance model (``ReplicaPerformance`` provides it)."""

    @property
    def kv_capacity_tokens(self) -> int: ...

    def prefill_seconds(self, prompt_tokens: int) -> float: ...

    def decode_step_seconds(self, batch_size: int, mean_context_tokens: int) -> float: ...


@dataclass(eq=False, slots=True)
class Job:
    """A request's progress on a replica; ``order`` is its arrival rank there."""

    request: TraceRequest
    priority: int
    order: int
    produced: int = 0
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


class _Phase(enum.Enum):
    PREFILL = enum.auto()
    DECODE = enum.auto()


class VirtualReplica:
    """The batching state of one replica; the event loop calls ``start`` and ``finish``."""

    def __init__(self, replica_id: str, model: StepTimeModel, *, max_num_seqs: int) -> None:
        self.replica_id = replica_id
        self._model = model
        self._capacity = model.kv_capacity_tokens
        self._max_num_seqs = max_num_seqs
        self._waiting: list[tuple[tuple[int, int], Job]] = []
        self._running: dict[int, Job] = {}
        self._reserved = 0
        self._phase: tuple[_Phase, list[Job]] | None = None
        self.busy_s = 0.0
        self.tokens_generated = 0
        self.preemptions = 0

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

    def submit(self, job: Job) -> None:
        heapq.heappush(self._waiting, (job.rank, job))

    # -- iterations ---------------------------------------------------------------------------

    def start(self, now: float) -> float | None:
        """Admit, then begin the prefill pass (or else a decode step); its end time, or None
        when there is nothing to run."""
        admitted = self._admit()
        if admitted:
            tokens = sum(job.context_tokens for job in admitted)
            return self._begin(_Phase.PREFILL, admitted, now, self._model.prefill_seconds(tokens))
        return self._begin_decode(now)

    def finish(self, now: float) -> float | None:
        """End the phase in progress at ``now``: emit its tokens and begin the next phase."""
        if self._phase is None:
            raise RuntimeError(f"{self.replica_id}: no phase in progress")
        kind, batch = self._phase
        self._phase = None
        self._emit(batch, now)
        if kind is _Phase.PREFILL:
            return self._begin_decode(now)
        return self.start(now)

    def _begin_decode(self, now: float) -> float | None:
        if not self._running:
            return None
        batch = list(self._running.values())
        mean_context = sum(job.context_tokens for job in batch) // len(batch)
        seconds = self._model.decode_step_seconds(len(batch), mean_context)
        return self._begin(_Phase.DECODE, batch, now, seconds)

    def _begin(self, kind: _Phase, batch: list[Job], now: float, seconds: float) -> float:
        self._phase = (kind, batch)
        self.busy_s += seconds
        return now + seconds

    def _emit(self, batch: list[Job], now: float) -> None:
        # Admission (and so preemption) happens only between phases: every job of the batch
        # is still running.
        for job in batch:
            if job.first_token_at is None:
                job.first_token_at = now
            job.produced += 1
            self.tokens_generated += 1
            if job.produced == job.request.output_tokens:
                self._release(job)
                job.finished_at = now

    # -- admission ----------------------------------------------------------------------------

    def _fits(self, kv_tokens: int, *, freed_tokens: int = 0, freed_slots: int = 0) -> bool:
        free_tokens = self._capacity - self._reserved + freed_tokens
        free_slots = self._max_num_seqs - len(self._running) + freed_slots
        return kv_tokens <= free_tokens and free_slots >= 1

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

    def _admit(self) -> list[Job]:
        admitted: list[Job] = []
        while self._waiting:
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
            admitted.append(head)
        return admitted

    def _release(self, job: Job) -> None:
        del self._running[job.order]
        self._reserved -= job.kv_tokens
