"""How to start an engine process for one replica: the engine-agnostic spec and its command.

The replica actor (control plane) builds an ``EngineSpec`` and runs ``engine_command``'s argv
on the node Ray placed it on; this module is the only place that knows each engine's flags.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

from nodes.engines.vllm import VllmLaunch, vllm_argv, vllm_env
from nodes.models import Dtype, ModelArchitecture
from scheduler.errors import ConfigError
from scheduler.types import EngineKind, KvCacheDtype


@dataclass(frozen=True, slots=True)
class EngineSpec:
    """Everything an engine needs to serve one replica, whatever the engine."""

    kind: EngineKind
    served_model_name: str
    architecture: ModelArchitecture
    dtype: Dtype
    accelerator: str
    tensor_parallel: int
    gpu_memory_utilization: float
    max_num_seqs: int
    max_model_len: int
    cpu_cores: int | None = None
    cpu_memory_gib: float | None = None
    cpu_memory_bandwidth_gbps: float | None = None
    kv_cache_dtype: KvCacheDtype = KvCacheDtype.AUTO
    time_scale: float = 1.0
    """Sim engine only: run modelled time this many times faster (tests)."""
    vllm: VllmLaunch | None = None
    """vLLM engine only: checkpoint and engine options."""


@dataclass(frozen=True, slots=True)
class EngineCommand:
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    process_group: bool = False
    """Start the engine in its own process group and stop the whole group (vLLM forks
    engine-core and worker processes)."""


def engine_command(
    spec: EngineSpec, host: str, port: int, parent_pid: int, gpu_ids: Sequence[int] = ()
) -> EngineCommand:
    """The command line that serves ``spec`` on ``host:port`` with the GPUs Ray assigned."""
    if spec.kind is EngineKind.SIM:
        return _sim_command(spec, host, port, parent_pid)
    if spec.vllm is None:
        raise ConfigError(f"model {spec.served_model_name}: engine vllm needs its weights")
    return EngineCommand(
        vllm_argv(spec.vllm, host, port), vllm_env(spec.vllm, gpu_ids), process_group=True
    )


def _sim_command(spec: EngineSpec, host: str, port: int, parent_pid: int) -> EngineCommand:
    from nodes.engines.sim.cli import engine_command as sim_argv
    from nodes.engines.sim.spec import SimEngineSpec

    # The sim spec has every EngineSpec field but the engine kind and the vLLM options.
    fields = {
        f.name: getattr(spec, f.name)
        for f in dataclasses.fields(spec)
        if f.name not in {"kind", "vllm"}
    }
    sim = SimEngineSpec.model_validate(fields)
    return EngineCommand(sim_argv(sim, host=host, port=port, parent_pid=parent_pid))
