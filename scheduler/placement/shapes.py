"""From config and catalog to numbers: what a replica needs and does on a node group.

The one place where the control plane asks the performance model (``nodes.performance``)
about a (model, hardware, TP) combination; solvers and routers only see the results.
"""

from __future__ import annotations

from nodes.accelerators import AcceleratorKind, AcceleratorSpec, accelerator, cpu_accelerator
from nodes.performance import ReplicaPerformance, replica_performance
from scheduler.config import ModelConfig, NodeGroup
from scheduler.framework.placement import ReplicaShape
from scheduler.framework.routing import PerfProfile
from scheduler.types import EngineKind, Ownership

REFERENCE_CONTEXT_TOKENS = 1024
"""Context length at which a replica's decode-step terms are summarised for routing."""

_TP_DEGREES = (1, 2, 4, 8, 16)


def group_accelerator(group: NodeGroup) -> AcceleratorSpec:
    """The accelerator of a node group; CPU groups get a spec built from their cores/memory."""
    spec = accelerator(group.accelerator)
    if spec.kind is not AcceleratorKind.CPU:
        return spec
    cpu = group.cpu
    if cpu is None:
        return spec
    return cpu_accelerator(
        cores=cpu.cores,
        memory_gib=cpu.memory_gib,
        memory_bandwidth_gbps=cpu.memory_bandwidth_gbps,
        price_per_hour=group.node_price_per_hour(),
    )


def performance(
    model: ModelConfig, spec: AcceleratorSpec, tensor_parallel: int, utilization: float
) -> ReplicaPerformance:
    return replica_performance(
        model.resolved_architecture,
        model.dtype,
        spec,
        tensor_parallel=tensor_parallel,
        gpu_memory_utilization=utilization,
        kv_dtype_bytes=model.kv_cache_dtype.bytes_per_element,
    )


def tp_candidates(model: ModelConfig, group: NodeGroup) -> list[int]:
    """TP degrees worth trying: the fixed one, or powers of two that divide the head count
    and fit in one node (TP never spans nodes)."""
    if group.is_cpu:
        return [1]
    if model.tensor_parallel is not None:
        return [model.tensor_parallel]
    heads = model.resolved_architecture.num_attention_heads
    return [tp for tp in _TP_DEGREES if tp <= group.accelerators_per_node and heads % tp == 0]


def replica_price_per_hour(group: NodeGroup, tensor_parallel: int) -> float:
    """What the cost solver counts for one replica on ``group``: the group's solver price
    (marginal for owned hardware) per accelerator times TP; the whole node on CPU (one
    "accelerator" per node)."""
    return group.solver_price_per_hour() / group.accelerators_per_node * tensor_parallel


def replica_shapes(model: ModelConfig, group: NodeGroup, utilization: float) -> list[ReplicaShape]:
    """Every (TP) shape of ``model`` on ``group``'s hardware, fitting or not (with reasons),
    priced for the solver; capacity is left to ``scheduler.placement.capacity``."""
    spec = group_accelerator(group)
    if model.accelerators and spec.name not in model.accelerators:
        return []

    def misfit(tensor_parallel: int, reason: str) -> ReplicaShape:
        return ReplicaShape(
            model=model.name,
            group=group.name,
            accelerator=spec.name,
            tensor_parallel=tensor_parallel,
            memory_per_device_gib=0.0,
            fits=False,
            reason=reason,
            on_cpu=group.is_cpu,
            price_per_hour=replica_price_per_hour(group, tensor_parallel),
            interruptible=group.ownership is Ownership.SPOT,
        )

    if model.engine is EngineKind.VLLM and group.simulated and not group.is_cpu:
        return [misfit(1, "vLLM needs real GPUs; this node group's are simulated")]
    if model.tensor_parallel is not None and model.tensor_parallel > group.accelerators_per_node:
        reason = (
            f"TP {model.tensor_parallel} needs more than the {group.accelerators_per_node} "
            "accelerators of one node"
        )
        return [misfit(model.tensor_parallel, reason)]
    shapes: list[ReplicaShape] = []
    for tp in tp_candidates(model, group):
        perf = performance(model, spec, tp, utilization)
        needed = perf.memory_required_gib(model.max_context)
        reason = ""
        if not perf.fits:
            reason = (
                f"weights need {perf.weights_gib_per_device:.1f} GiB per device of "
                f"{spec.memory_gib:.0f} GiB"
            )
        elif perf.kv_capacity_tokens < model.max_context:
            reason = (
                f"KV cache holds {perf.kv_capacity_tokens} tokens, less than max_context "
                f"{model.max_context}"
            )
        shapes.append(
            ReplicaShape(
                model=model.name,
                group=group.name,
                accelerator=spec.name,
                tensor_parallel=tp,
                memory_per_device_gib=needed,
                fits=not reason,
                reason=reason,
                decode_tokens_per_s=perf.decode_tokens_per_second(1, REFERENCE_CONTEXT_TOKENS)
                if perf.fits
                else 0.0,
                on_cpu=group.is_cpu,
                price_per_hour=replica_price_per_hour(group, tp),
                interruptible=group.ownership is Ownership.SPOT,
            )
        )
    return shapes


def perf_profile(model: ModelConfig, perf: ReplicaPerformance) -> PerfProfile:
    """Summarise a replica's predicted speed into the linear terms routing uses."""
    one = perf.decode_step_seconds(1, REFERENCE_CONTEXT_TOKENS)
    sixteen = perf.decode_step_seconds(16, REFERENCE_CONTEXT_TOKENS)
    prompt = 1024
    return PerfProfile(
        prefill_tokens_per_s=prompt / perf.prefill_seconds(prompt),
        decode_step_base_s=one,
        decode_step_per_seq_s=max(0.0, (sixteen - one) / 15),
        kv_capacity_tokens=perf.kv_capacity_tokens,
        max_num_seqs=model.max_num_seqs,
        max_context=model.max_context,
    )
