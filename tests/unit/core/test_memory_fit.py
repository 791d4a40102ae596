"""Memory fit, table-driven: weights by dtype/quantization, KV by KV dtype, TP within a node,
CPU nodes by host memory; every "does not fit" carries its reason."""

from __future__ import annotations

from typing import Any

import pytest

from scheduler.config import ModelConfig, NodeGroup
from scheduler.placement.shapes import group_accelerator, performance, replica_shapes

GPU8 = {"accelerators_per_node": 8}


def _shapes(model: dict[str, Any], group: dict[str, Any]) -> dict[int, tuple[bool, str]]:
    shapes = replica_shapes(
        ModelConfig.model_validate(model),
        NodeGroup.model_validate({"name": "g", **group}),
        utilization=0.9,
    )
    return {shape.tensor_parallel: (shape.fits, shape.reason) for shape in shapes}


@pytest.mark.parametrize(
    ("model", "group", "tp", "fits", "reason"),
    [
        # 70B in bf16 is ~131 GiB of weights: no single 80 GB card holds it ...
        ({"name": "llama-3.1-70b"}, {"accelerator": "H100-SXM", **GPU8}, 1, False,
         "weights need 131."),
        # ... TP 4 over one node's cards does, with room for an 8k context.
        ({"name": "llama-3.1-70b", "max_context": 8192}, {"accelerator": "H100-SXM", **GPU8}, 4,
         True, ""),
        # 4-bit AWQ: ~35 GiB, one H100 is enough.
        ({"name": "llama-3.1-70b", "dtype": "awq", "max_context": 8192},
         {"accelerator": "H100-SXM"}, 1, True, ""),
        # fp8 halves the 8B model's weights on a 24 GB L4.
        ({"name": "llama-3.1-8b", "dtype": "fp8", "max_context": 8192}, {"accelerator": "L4"}, 1,
         True, ""),
        # A 128k context does not fit an L4's KV cache in bf16.
        ({"name": "llama-3.1-8b", "max_context": 131072}, {"accelerator": "L4"}, 1, False,
         "less than max_context 131072"),
        # CPU nodes: a 0.5B model fits 64 GiB of host memory, a 70B one does not.
        ({"name": "qwen2.5-0.5b"}, {"accelerator": "CPU", "cpu": {"memory_gib": 64}}, 1, True, ""),
        ({"name": "llama-3.1-70b"}, {"accelerator": "CPU", "cpu": {"memory_gib": 64}}, 1, False,
         "weights need"),
        # A fixed TP larger than one node's cards: TP never spans nodes.
        ({"name": "llama-3.1-70b", "tensor_parallel": 8}, {"accelerator": "L40S",
         "accelerators_per_node": 4}, 8, False, "more than the 4 accelerators of one node"),
    ],
)  # fmt: skip
def test_fit_and_reason(
    model: dict[str, Any], group: dict[str, Any], tp: int, fits: bool, reason: str
) -> None:
    shapes = _shapes(model, group)
    assert shapes[tp][0] is fits, shapes[tp]
    assert reason in shapes[tp][1]
    assert bool(shapes[tp][1]) is not fits, "a shape that does not fit says why, and only then"


def test_tp_degrees_divide_the_heads_and_stay_in_one_node() -> None:
    assert sorted(_shapes({"name": "llama-3.1-70b"}, {"accelerator": "H100-SXM", **GPU8})) == [
        1, 2, 4, 8,
    ]  # fmt: skip
    assert sorted(_shapes({"name": "llama-3.1-70b"}, {"accelerator": "L4"})) == [1]
    assert sorted(_shapes({"name": "qwen2.5-0.5b"}, {"accelerator": "CPU"})) == [1]


@pytest.mark.parametrize(
    ("dtype", "weights_gib"),
    [("bfloat16", 14.96), ("fp8", 7.48), ("int8", 7.48), ("awq", 4.0), ("gptq", 4.0)],
)
def test_weight_bytes_follow_the_dtype(dtype: str, weights_gib: float) -> None:
    model = ModelConfig.model_validate({"name": "llama-3.1-8b", "dtype": dtype})
    group = NodeGroup.model_validate({"name": "g", "accelerator": "H100-SXM"})
    perf = performance(model, group_accelerator(group), 1, 0.9)
    assert perf.weights_gib_per_device == pytest.approx(weights_gib, rel=0.03)


def test_an_fp8_kv_cache_holds_twice_the_tokens() -> None:
    group = NodeGroup.model_validate({"name": "g", "accelerator": "L4"})
    spec = group_accelerator(group)
    auto = ModelConfig.model_validate({"name": "llama-3.1-8b", "dtype": "fp8"})
    fp8 = ModelConfig.model_validate(
        {"name": "llama-3.1-8b", "dtype": "fp8", "kv_cache_dtype": "fp8"}
    )
    tokens = [performance(m, spec, 1, 0.9).kv_capacity_tokens for m in (auto, fp8)]
    assert tokens[1] == pytest.approx(2 * tokens[0], rel=0.01)
