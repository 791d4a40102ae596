"""The batch life cycle (``scheduler.batches.states``): every legal step, every illegal one,
and ``settle``'s decision for each situation a batch can be in."""

from __future__ import annotations

import pytest

from scheduler.batches.objects import BatchRecord
from scheduler.batches.states import (
    TERMINAL,
    BatchStatus,
    Event,
    Fill,
    IllegalTransition,
    Progress,
    settle,
    transition,
    transitions,
)

S, E = BatchStatus, Event

LEGAL = [
    (S.VALIDATING, E.VALIDATED, S.IN_PROGRESS),
    (S.VALIDATING, E.REJECTED, S.FAILED),
    (S.VALIDATING, E.CANCEL, S.CANCELLING),
    (S.VALIDATING, E.DEADLINE, S.EXPIRED),
    (S.IN_PROGRESS, E.CANCEL, S.CANCELLING),
    (S.IN_PROGRESS, E.LINES_DONE, S.FINALIZING),
    (S.IN_PROGRESS, E.DEADLINE, S.EXPIRED),
    (S.FINALIZING, E.FILES_WRITTEN, S.COMPLETED),
    (S.CANCELLING, E.CANCEL, S.CANCELLING),
    (S.CANCELLING, E.CANCEL_SETTLED, S.CANCELLED),
    (S.CANCELLING, E.DEADLINE, S.EXPIRED),
    (S.CANCELLED, E.CANCEL, S.CANCELLED),
]


@pytest.mark.parametrize(("source", "event", "target"), LEGAL)
def test_legal_steps(source: BatchStatus, event: Event, target: BatchStatus) -> None:
    step = transition(source, event)
    assert step.target is target
    assert step.reason and step.reason[0].islower()
    assert step.changes is (source is not target)


def test_the_table_is_exactly_the_legal_steps() -> None:
    assert {(t.source, t.event, t.target) for t in transitions()} == set(LEGAL)


@pytest.mark.parametrize("status", list(BatchStatus))
@pytest.mark.parametrize("event", list(Event))
def test_every_other_step_is_refused_with_a_reason(status: BatchStatus, event: Event) -> None:
    if any(source is status and ev is event for source, ev, _ in LEGAL):
        return
    with pytest.raises(IllegalTransition) as refused:
        transition(status, event)
    assert refused.value.code == "invalid_batch_status"
    assert status.value in refused.value.message


def test_cancelling_a_finished_batch_says_so() -> None:
    with pytest.raises(IllegalTransition, match="Cannot cancel a batch with status `completed`"):
        transition(S.COMPLETED, E.CANCEL)


def test_nothing_leaves_a_terminal_status() -> None:
    for step in transitions():
        if step.source in TERMINAL:
            assert not step.changes, step


def test_every_status_but_validating_has_its_timestamp_in_the_batch_object() -> None:
    record = BatchRecord(
        id="batch_x",
        tenant="t",
        key_id=None,
        endpoint="/v1/completions",
        input_file_id="file-x",
        completion_window="24h",
        status=S.VALIDATING,
        created_at=1.0,
        expires_at=2.0,
    )
    shape = record.to_openai()
    for status in BatchStatus:
        if status is not S.VALIDATING:
            assert status.stamp in shape and shape[status.stamp] is None


NOW, DEADLINE = 1_000.0, 2_000.0


@pytest.mark.parametrize(
    ("progress", "now", "targets", "fill"),
    [
        pytest.param(
            Progress(S.IN_PROGRESS, DEADLINE, unfinished=3), NOW, None, None, id="running"
        ),
        pytest.param(
            Progress(S.IN_PROGRESS, DEADLINE, unfinished=0, finished_at=NOW - 1),
            NOW,
            (S.FINALIZING, S.COMPLETED),
            None,
            id="all-done",
        ),
        pytest.param(
            Progress(S.IN_PROGRESS, DEADLINE, unfinished=0, finished_at=DEADLINE - 1),
            DEADLINE + 50,
            (S.FINALIZING, S.COMPLETED),
            None,
            id="done-in-time-settled-late",
        ),
        pytest.param(
            Progress(S.IN_PROGRESS, DEADLINE, unfinished=2),
            DEADLINE,
            (S.EXPIRED,),
            Fill.EXPIRED,
            id="deadline",
        ),
        pytest.param(
            Progress(S.IN_PROGRESS, DEADLINE, unfinished=0, finished_at=DEADLINE),
            DEADLINE + 1,
            (S.EXPIRED,),
            Fill.EXPIRED,
            id="expiry-cut-short-stays-expired",
        ),
        pytest.param(
            Progress(S.FINALIZING, DEADLINE, unfinished=0),
            DEADLINE + 9,
            (S.COMPLETED,),
            None,
            id="finalize-cut-short",
        ),
        pytest.param(
            Progress(S.CANCELLING, DEADLINE, unfinished=5, in_flight=2),
            NOW,
            None,
            None,
            id="cancel-waits-for-in-flight",
        ),
        pytest.param(
            Progress(S.CANCELLING, DEADLINE, unfinished=5, in_flight=0),
            NOW,
            (S.CANCELLED,),
            Fill.CANCELLED,
            id="cancel-settles",
        ),
        pytest.param(
            Progress(S.CANCELLING, DEADLINE, unfinished=5, in_flight=2),
            DEADLINE,
            (S.EXPIRED,),
            Fill.EXPIRED,
            id="cancel-overtaken-by-deadline",
        ),
        pytest.param(
            Progress(S.VALIDATING, DEADLINE, unfinished=0), NOW, None, None, id="validating"
        ),
        pytest.param(
            Progress(S.VALIDATING, DEADLINE, unfinished=0),
            DEADLINE,
            (S.EXPIRED,),
            Fill.EXPIRED,
            id="validation-never-finished",
        ),
        *[
            pytest.param(
                Progress(status, DEADLINE, unfinished=0),
                DEADLINE * 2,
                None,
                None,
                id=f"terminal-{status.value}",
            )
            for status in sorted(TERMINAL)
        ],
    ],
)
def test_settle(
    progress: Progress, now: float, targets: tuple[BatchStatus, ...] | None, fill: Fill | None
) -> None:
    due = settle(progress, now)
    if targets is None:
        assert due is None
        return
    assert due is not None
    assert tuple(step.target for step in due.steps) == targets
    assert due.fill is fill
    assert due.target.terminal
    for first, second in zip(due.steps, due.steps[1:], strict=False):
        assert first.target is second.source
