"""Discrete-event simulation of a placed fleet: the gateway's routing over the performance model.

``simulate(config, plan, trace)`` replays a trace in virtual time through the same routing
profiles the gateway builds, on replicas that batch like the live sim engine, and returns a
``SimulationReport``. Pure: no I/O beyond ``load_trace``, no clock, seeded randomness only.
"""

from scheduler.simulator.report import ClassReport, RequestOutcome, SimulationReport
from scheduler.simulator.run import simulate
from scheduler.simulator.trace import TraceRequest, load_trace, synthetic_trace

__all__ = [
    "ClassReport",
    "RequestOutcome",
    "SimulationReport",
    "TraceRequest",
    "load_trace",
    "simulate",
    "synthetic_trace",
]
