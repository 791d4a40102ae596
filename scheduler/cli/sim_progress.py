"""Progress bars for simulated runs: one per run, over the trace's arrival span, on stderr.

The simulator calls the hook on every event; the bar is redrawn only every
``1 / PROGRESS_STEPS`` of the span, so a long run pays a comparison per event, not a redraw.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from scheduler.simulator.baselines import Progress as RunProgress
from scheduler.simulator.engine import Action
from scheduler.simulator.trace import TraceRequest

PROGRESS_STEPS = 200
"""Redraws per run (each one a fraction of the trace's arrival span)."""


@contextmanager
def run_progress(
    requests: Sequence[TraceRequest], console: Console, *, enabled: bool = True
) -> Iterator[RunProgress]:
    """Yields a ``baselines.Progress``: per run name, the ``on_event`` hook driving its bar."""
    arrivals = [request.arrived_at for request in requests]
    first = min(arrivals, default=0.0)
    span = max(arrivals, default=0.0) - first
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}% of arrivals"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not enabled,
    )

    def start(run: str) -> Action | None:
        task = bar.add_task(f"Simulating {run} ({len(requests):,} requests)", total=span or 1.0)
        return _advance(bar, task, first, span)

    with bar:
        yield start


def _advance(bar: Progress, task: TaskID, first: float, span: float) -> Action:
    step = span / PROGRESS_STEPS if span > 0 else 1.0
    mark = first

    def on_event(now: float) -> None:
        nonlocal mark
        if now >= mark:
            bar.update(task, completed=min(span, now - first))
            mark = now + step

    return on_event
