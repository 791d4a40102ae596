"""What to launch for one planned replica: the engine spec and the routing profile of its card.

Joins the config (model, node group) with the performance model; used by the controller when
it starts a replica.
"""

from __future__ import annotations

from dataclasses import dataclass

from nodes.engines.launch import EngineSpec
from nodes.engines.vllm import VllmLaunch
from scheduler.config import GearshiftConfig, ModelConfig, NodeGroup
from scheduler.framework.placement import ReplicaAssignment
from scheduler.framework.routing import PerfProfile
from scheduler.placement.shapes import group_accelerator, perf_profile, performance
from scheduler.types import EngineKind


@dataclass(frozen=True, slots=True)
class ReplicaLaunch:
    engine: EngineSpec
    perf: PerfProfile
    on_gpu: bool


def replica_launch(
    config: GearshiftConfig, model: ModelConfig, group: NodeGroup, assignment: ReplicaAssignment
) -> ReplicaLaunch:
    spec = group_accelerator(group)
    utilization = config.placement.gpu_memory_utilization
    cpu = group.cpu
    engine = EngineSpec(
        kind=model.engine,
        served_model_name=model.name,
        architecture=model.resolved_architecture,
        dtype=model.dtype,
        accelerator=spec.name,
        tensor_parallel=assignment.tensor_parallel,
        gpu_memory_utilization=utilization,
        max_num_seqs=model.max_num_seqs,
        max_model_len=model.max_context,
        kv_cache_dtype=model.kv_cache_dtype,
        cpu_cores=cpu.cores if cpu else None,
        cpu_memory_gib=cpu.memory_gib if cpu else None,
        cpu_memory_bandwidth_gbps=cpu.memory_bandwidth_gbps if cpu else None,
        vllm=_vllm_launch(model, group, assignment, utilization)
        if model.engine is EngineKind.VLLM
        else None,
    )
    perf = performance(model, spec, assignment.tensor_parallel, utilization)
    return ReplicaLaunch(engine, perf_profile(model, perf), on_gpu=not group.is_cpu)


def _vllm_launch(
    model: ModelConfig, group: NodeGroup, assignment: ReplicaAssignment, utilization: float
) -> VllmLaunch:
    local = model.local_weights
    weights = str(local) if local is not None else str(model.weights)
    options = model.vllm
    return VllmLaunch(
        weights=weights,
        served_model_name=model.name,
        dtype=model.dtype,
        tensor_parallel=assignment.tensor_parallel,
        max_model_len=model.max_context,
        max_num_seqs=model.max_num_seqs,
        on_cpu=group.is_cpu,
        gpu_memory_utilization=utilization,
        cpu_kv_cache_gib=options.cpu_kv_cache_gib,
        cpu_threads=group_accelerator(group).cores if group.is_cpu else None,
        enforce_eager=options.enforce_eager,
        kv_cache_dtype=model.kv_cache_dtype,
        extra_args=tuple(options.extra_args),
        env=dict(options.env),
    )
