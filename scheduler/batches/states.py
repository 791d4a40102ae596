"""The batch life cycle as a pure state machine: statuses, events, transitions with reasons.

::

    validating ──validated──▶ in_progress ──lines_done──▶ finalizing ──files_written──▶ completed
        │ rejected               │ cancel                                 ▲
        ▼                        ▼                                        │ (resumed after a crash)
      failed                 cancelling ──cancel_settled──▶ cancelled
                                 │
    validating / in_progress / cancelling ──deadline──▶ expired

``settle`` decides, from a batch's counters and the clock, whether it is due to move on and how
(which terminal status, which error record fills the lines without a result). No I/O, no clock:
``now`` is passed in. The store performs what this module decides.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from scheduler.errors import InvalidRequest


class BatchStatus(enum.StrEnum):
    """OpenAI's batch statuses."""

    VALIDATING = "validating"
    FAILED = "failed"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    EXPIRED = "expired"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL

    @property
    def stamp(self) -> str:
        """The batch object's timestamp field set on entering this status (``failed_at``)."""
        return f"{self.value}_at"


TERMINAL = frozenset(
    {BatchStatus.FAILED, BatchStatus.COMPLETED, BatchStatus.EXPIRED, BatchStatus.CANCELLED}
)
"""No event moves a batch out of these; every line of a terminal batch has its one result."""


class Event(enum.StrEnum):
    """What can happen to a batch."""

    VALIDATED = "validated"
    REJECTED = "rejected"
    CANCEL = "cancel"
    LINES_DONE = "lines_done"
    FILES_WRITTEN = "files_written"
    CANCEL_SETTLED = "cancel_settled"
    DEADLINE = "deadline"


class IllegalTransition(InvalidRequest):
    """The event does not apply to the batch's status (a 400: retrying will not help)."""

    def __init__(self, status: BatchStatus, event: Event) -> None:
        if event is Event.CANCEL:
            message = f"Cannot cancel a batch with status `{status.value}`."
        else:
            message = f"Event `{event.value}` does not apply to a batch with status {status.value}."
        super().__init__(message, code="invalid_batch_status")
        self.status = status
        self.event = event


@dataclass(frozen=True, slots=True)
class Transition:
    """One step: ``source`` --``event``--> ``target``, and why, in a sentence."""

    source: BatchStatus
    event: Event
    target: BatchStatus
    reason: str

    @property
    def changes(self) -> bool:
        """False for the idempotent no-ops (cancelling a batch already cancelling)."""
        return self.source is not self.target


_S, _E = BatchStatus, Event
_TABLE: dict[tuple[BatchStatus, Event], tuple[BatchStatus, str]] = {
    (_S.VALIDATING, _E.VALIDATED): (
        _S.IN_PROGRESS,
        "the input file is valid; its lines wait for the dispatcher",
    ),
    (_S.VALIDATING, _E.REJECTED): (
        _S.FAILED,
        "the input file failed validation (see `errors`); no line ran",
    ),
    (_S.VALIDATING, _E.CANCEL): (_S.CANCELLING, "cancelled before validation finished"),
    (_S.VALIDATING, _E.DEADLINE): (
        _S.EXPIRED,
        "the completion window passed before validation finished",
    ),
    (_S.IN_PROGRESS, _E.CANCEL): (
        _S.CANCELLING,
        "cancel requested: lines in flight finish, unstarted lines go to the error file",
    ),
    (_S.IN_PROGRESS, _E.LINES_DONE): (
        _S.FINALIZING,
        "every line has its result; the output and error files are being written",
    ),
    (_S.IN_PROGRESS, _E.DEADLINE): (
        _S.EXPIRED,
        "the completion window passed; unfinished lines go to the error file as batch_expired",
    ),
    (_S.FINALIZING, _E.FILES_WRITTEN): (
        _S.COMPLETED,
        "the output and error files are durable",
    ),
    (_S.CANCELLING, _E.CANCEL): (_S.CANCELLING, "already cancelling"),
    (_S.CANCELLING, _E.CANCEL_SETTLED): (
        _S.CANCELLED,
        "no line is in flight; unstarted lines are in the error file as batch_cancelled",
    ),
    (_S.CANCELLING, _E.DEADLINE): (
        _S.EXPIRED,
        "the completion window passed while lines were still in flight",
    ),
    (_S.CANCELLED, _E.CANCEL): (_S.CANCELLED, "already cancelled"),
}


def transition(status: BatchStatus, event: Event) -> Transition:
    """The step ``event`` takes from ``status``; ``IllegalTransition`` when there is none."""
    found = _TABLE.get((status, event))
    if found is None:
        raise IllegalTransition(status, event)
    target, reason = found
    return Transition(status, event, target, reason)


def transitions() -> tuple[Transition, ...]:
    """Every legal step (the docs and the tests read the table through this)."""
    return tuple(transition(status, event) for status, event in _TABLE)


class Fill(enum.StrEnum):
    """The error record written for each line without a result when a batch settles."""

    EXPIRED = "batch_expired"
    CANCELLED = "batch_cancelled"


@dataclass(frozen=True, slots=True)
class Progress:
    """What ``settle`` needs to know about one batch."""

    status: BatchStatus
    expires_at: float
    unfinished: int
    """Lines without a result."""
    in_flight: int = 0
    """Lines leased to a worker whose lease has not run out."""
    finished_at: float | None = None
    """When the last line got its result (None while some line has none)."""


@dataclass(frozen=True, slots=True)
class Settlement:
    """How a due batch moves on: its steps in order (the last one lands on a terminal status),
    and the error record for every line still without a result (None: there is none)."""

    steps: tuple[Transition, ...]
    fill: Fill | None

    @property
    def target(self) -> BatchStatus:
        return self.steps[-1].target


def settle(progress: Progress, now: float) -> Settlement | None:
    """Whether the batch is due to finish, and how; None while it must wait.

    - in_progress: every line got its result before the deadline → finalizing → completed;
      otherwise, once past the deadline → expired (lines without a result: batch_expired).
    - finalizing (a finalize cut short) → completed.
    - cancelling: past the deadline → expired (lines still in flight: batch_expired); else
      once nothing is in flight → cancelled (unstarted lines: batch_cancelled).
    - validating past the deadline (validation never finished) → expired.

    Rerun after a crash between filling the error records and the final status, it lands on
    the same status: the fill records are dated at or after the deadline.
    """
    status, late = progress.status, now >= progress.expires_at
    done_in_time = progress.finished_at is not None and progress.finished_at < progress.expires_at
    if status is BatchStatus.IN_PROGRESS:
        if progress.unfinished == 0 and done_in_time:
            steps = (
                transition(status, Event.LINES_DONE),
                transition(BatchStatus.FINALIZING, Event.FILES_WRITTEN),
            )
            return Settlement(steps, None)
        if late:
            return Settlement((transition(status, Event.DEADLINE),), Fill.EXPIRED)
        return None
    if status is BatchStatus.FINALIZING:
        return Settlement((transition(status, Event.FILES_WRITTEN),), None)
    if status is BatchStatus.CANCELLING:
        if late:
            return Settlement((transition(status, Event.DEADLINE),), Fill.EXPIRED)
        if progress.in_flight == 0:
            return Settlement((transition(status, Event.CANCEL_SETTLED),), Fill.CANCELLED)
        return None
    if status is BatchStatus.VALIDATING and late:
        return Settlement((transition(status, Event.DEADLINE),), Fill.EXPIRED)
    return None
