"""The demand a simulated run's planner sizes the fleet for: the config's ``workload``, or else
what the trace itself asks for.

Per model and class of a trace: rate = requests ÷ the trace's span (first to last arrival,
at least one second), prompt and output tokens = the rounded means. Pure.
"""

from __future__ import annotations

import enum
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from scheduler.config import GearshiftConfig, WorkloadItem
from scheduler.simulator.trace import TraceRequest
from scheduler.types import TrafficClass

MIN_SPAN_S = 1.0
"""A trace's span never counts as shorter than this (a lone request is 1 req/s, not ∞)."""


class DemandSource(enum.StrEnum):
    """Where the planner's demand came from."""

    CONFIG = "config"
    """The config's own ``workload:`` entries."""
    TRACE = "trace"
    """Derived from the simulated trace (the config has no ``workload:``)."""


@dataclass(frozen=True, slots=True)
class PlannedDemand:
    """The config the planner sees (with its workload) and where that workload came from."""

    config: GearshiftConfig
    source: DemandSource

    @property
    def workload(self) -> tuple[WorkloadItem, ...]:
        return tuple(self.config.workload)


def trace_workload(
    trace: Sequence[TraceRequest], *, span_s: float | None = None
) -> list[WorkloadItem]:
    """One workload entry per (model, class) of ``trace``, sorted by model then class.

    ``span_s`` overrides the measured span (e.g. a synthetic trace's duration).
    """
    if not trace:
        return []
    arrivals = [request.arrived_at for request in trace]
    span = span_s if span_s is not None else max(arrivals) - min(arrivals)
    span = max(MIN_SPAN_S, span)
    groups: dict[tuple[str, TrafficClass], list[TraceRequest]] = defaultdict(list)
    for request in trace:
        groups[(request.model, request.traffic_class)].append(request)
    order = list(TrafficClass)
    return [
        WorkloadItem(
            model=model,
            traffic_class=traffic_class,
            rate_per_s=len(requests) / span,
            prompt_tokens=round(sum(r.prompt_tokens for r in requests) / len(requests)),
            output_tokens=round(sum(r.output_tokens for r in requests) / len(requests)),
        )
        for (model, traffic_class), requests in sorted(
            groups.items(), key=lambda item: (item[0][0], order.index(item[0][1]))
        )
    ]


def planned_demand(
    config: GearshiftConfig, trace: Sequence[TraceRequest], *, span_s: float | None = None
) -> PlannedDemand:
    """``config`` as is when it has a workload; else with the trace's demand (for the models the
    config serves) as its workload."""
    if config.workload:
        return PlannedDemand(config, DemandSource.CONFIG)
    served = {model.name for model in config.models}
    workload = [item for item in trace_workload(trace, span_s=span_s) if item.model in served]
    return PlannedDemand(config.model_copy(update={"workload": workload}), DemandSource.TRACE)
