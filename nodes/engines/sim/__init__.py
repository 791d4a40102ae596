"""The sim engine: a process that answers like one vLLM replica, timed by the performance model.

It is the live twin of the simulator, used by ``gearshift serve`` (one engine per simulated
replica) and by the tests. Launch one with ``engine_command(spec, host=..., port=...,
parent_pid=...)`` and wait for ``GET /health``; embed one in-process with
``create_app(spec, step_time_model(spec))``.

Modules: ``spec`` (what the engine pretends to be), ``batcher`` (continuous batching with
priorities), ``text`` (stand-in tokens), ``protocol`` (OpenAI request and response shapes),
``metrics`` (vLLM-named Prometheus metrics), ``server`` (the HTTP app), ``lifeline`` (exit with
the owner), ``cli`` (the process).
"""

from nodes.engines.sim.cli import engine_command
from nodes.engines.sim.server import create_app
from nodes.engines.sim.spec import SimEngineSpec, step_time_model

__all__ = ["SimEngineSpec", "create_app", "engine_command", "step_time_model"]
