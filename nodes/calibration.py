"""Published throughput measurements, and how close the performance model comes to each of them.

Each point is copied from ``shared/reference/performance.md`` §3.3-§3.5 (research notes, 2026) with
the conditions the source states; where a source leaves a condition out, the point says what was
assumed. Points the model cannot fit with the one set of GPU constants are kept, marked
``outlier=True`` with the reason, and excluded from the tolerance check.
``docs/performance-model.md`` prints the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from nodes.accelerators import ACCELERATORS, AcceleratorSpec, accelerator, cpu_accelerator
from nodes.models import Dtype, catalog_model
from nodes.performance import ReplicaPerformance, replica_performance

Metric = Literal[
    "decode_tokens_per_s",  # batch_size / decode step, steady state
    "tpot_s",  # one decode step (time per output token, inter-token latency)
    "output_tokens_per_s",  # closed-loop benchmark throughput, prefills included
    "prefill_tokens_per_s",  # prompt tokens / one prefill pass of context_tokens tokens
]


@dataclass(frozen=True, slots=True)
class CalibrationPoint:
    """One published measurement and its conditions.

    ``context_tokens`` is the mean context during decode (prompt + output / 2) for decode metrics
    and the prompt length for prefill; ``output_tokens_per_s`` uses ``prompt_tokens`` and
    ``output_tokens`` instead, with ``batch_size`` as the concurrency. ``cpu_cores`` builds a CPU
    node of that many vCPUs instead of the catalog's default ``CPU``.
    """

    source: str
    model: str
    accelerator: str
    dtype: Dtype
    tensor_parallel: int
    batch_size: int
    context_tokens: int
    metric: Metric
    published: float
    tolerance: float = 0.20
    outlier: bool = False
    reason: str = ""
    engine: str = "vllm"
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    cpu_cores: int | None = None

    def __post_init__(self) -> None:
        if self.outlier and not self.reason:
            raise ValueError(f"{self.source}: an outlier needs a reason")
        serving = self.metric == "output_tokens_per_s"
        if serving != (self.prompt_tokens is not None and self.output_tokens is not None):
            raise ValueError(f"{self.source}: prompt/output tokens go with output_tokens_per_s")


@dataclass(frozen=True, slots=True)
class CalibrationRow:
    """A point with the model's prediction; ``ratio`` is predicted / published."""

    point: CalibrationPoint
    predicted: float
    ratio: float

    @property
    def within_tolerance(self) -> bool:
        """Whether the prediction lies within the point's relative tolerance of the published."""
        return abs(self.ratio - 1.0) <= self.point.tolerance


_JM = "johnmusgrave.com, vLLM 0.23, random 1024 in / 128 out, concurrency 1"
_KOYEB = "Koyeb via aihardwareindex (lengths not stated; 1,024-token context assumed)"
_WMX = "ai.wmx.dev, vLLM 0.23, 256 in / 128 out"
_MR = "mushfiqrahman, vLLM, 256 in / 128 out (output tok/s)"
_KOYEB_H100 = (
    "Koyeb's H100 rows reach 45-47 % of the bandwidth roofline, its A100-80GB rows 60-63 % and "
    "its L40S rows 83 %: the H100 setup was limited by something the model does not see"
)
_IB = (
    "InferenceBench concurrency-sweep recipe (yobitelcomm.github.io/bench), vLLM 0.21.0, "
    "H100-80GB-HBM3, chatbot-short, TPOT p50 (lengths not stated; 512-token context assumed)"
)
_XEON = (
    "performance.md §3.5 compilation of Xeon/EPYC/Graviton3 runs [S, one row estimated], llama.cpp "
    "Q4_K_M (4.85 bit/weight, modelled as 4-bit GPTQ) on 2 threads, llama-bench tg128 / pp512"
)

CALIBRATION_POINTS: tuple[CalibrationPoint, ...] = (
    CalibrationPoint(
        _JM, "llama-3.1-8b", "A100-40GB", Dtype.BF16, 1, 1, 1088, "decode_tokens_per_s", 75.0
    ),
    CalibrationPoint(
        _KOYEB, "llama-3.1-8b", "A100-80GB", Dtype.BF16, 1, 1, 1024, "decode_tokens_per_s", 79.0
    ),
    CalibrationPoint(
        _KOYEB, "llama-3.1-8b", "L40S", Dtype.BF16, 1, 1, 1024, "decode_tokens_per_s", 44.0
    ),
    CalibrationPoint(
        _KOYEB,
        "llama-3.1-8b",
        "H100-SXM",
        Dtype.BF16,
        1,
        1,
        1024,
        "decode_tokens_per_s",
        93.0,
        outlier=True,
        reason=_KOYEB_H100,
    ),
    CalibrationPoint(
        _KOYEB, "llama-3.1-8b", "A100-80GB", Dtype.BF16, 1, 32, 1024, "decode_tokens_per_s", 1933.0
    ),
    CalibrationPoint(
        _KOYEB, "llama-3.1-8b", "L40S", Dtype.BF16, 1, 32, 1024, "decode_tokens_per_s", 1124.0
    ),
    CalibrationPoint(
        _KOYEB,
        "llama-3.1-8b",
        "H100-SXM",
        Dtype.BF16,
        1,
        32,
        1024,
        "decode_tokens_per_s",
        2462.0,
        outlier=True,
        reason=_KOYEB_H100,
    ),
    CalibrationPoint(_IB, "llama-3.1-8b", "H100-SXM", Dtype.FP16, 1, 1, 512, "tpot_s", 0.00648),
    CalibrationPoint(_IB, "llama-3.1-8b", "H100-SXM", Dtype.FP16, 1, 4, 512, "tpot_s", 0.00659),
    CalibrationPoint(
        "vLLM blog 2024-09 (v0.5.3, Llama-3-8B, light load)",
        "llama-3.1-8b",
        "H100-SXM",
        Dtype.BF16,
        1,
        1,
        512,
        "tpot_s",
        0.013,
        outlier=True,
        reason="vLLM 0.5.3 spent 62 % of the time in the API server and scheduler "
        "(same blog); v0.6 cut TPOT 5x. The model assumes a current vLLM",
    ),
    CalibrationPoint(
        _WMX, "qwen2.5-0.5b", "L4", Dtype.BF16, 1, 1, 320, "decode_tokens_per_s", 168.0
    ),
    CalibrationPoint(_WMX, "qwen2.5-0.5b", "L4", Dtype.BF16, 1, 1, 320, "tpot_s", 0.0051),
    CalibrationPoint(_WMX, "qwen2.5-0.5b", "L4", Dtype.BF16, 1, 32, 320, "tpot_s", 0.0071),
    CalibrationPoint(
        _WMX,
        "qwen2.5-0.5b",
        "L4",
        Dtype.BF16,
        1,
        32,
        320,
        "output_tokens_per_s",
        3773.0,
        prompt_tokens=256,
        output_tokens=128,
    ),
    CalibrationPoint(
        _MR,
        "mistral-7b",
        "RTX-4090",
        Dtype.BF16,
        1,
        4,
        320,
        "output_tokens_per_s",
        210.0,
        prompt_tokens=256,
        output_tokens=128,
    ),
    CalibrationPoint(
        _MR,
        "mistral-7b",
        "RTX-4090",
        Dtype.BF16,
        1,
        16,
        320,
        "output_tokens_per_s",
        644.0,
        prompt_tokens=256,
        output_tokens=128,
    ),
    CalibrationPoint(
        _MR,
        "mistral-7b",
        "RTX-4090",
        Dtype.BF16,
        1,
        48,
        320,
        "output_tokens_per_s",
        1190.0,
        prompt_tokens=256,
        output_tokens=128,
    ),
    CalibrationPoint(
        _XEON,
        "llama-2-7b",
        "CPU",
        Dtype.GPTQ,
        1,
        1,
        64,
        "decode_tokens_per_s",
        5.0,
        engine="llama.cpp",
        cpu_cores=2,
    ),
    CalibrationPoint(
        _XEON,
        "llama-2-7b",
        "CPU",
        Dtype.GPTQ,
        1,
        1,
        512,
        "prefill_tokens_per_s",
        67.5,
        engine="llama.cpp",
        cpu_cores=2,
        outlier=True,
        reason="llama.cpp multiplies 4-bit weights by int8 activations (VNNI), "
        "several times the bf16 FLOP/s the CPU model assumes for vLLM",
    ),
)


def _accelerator_for(point: CalibrationPoint) -> AcceleratorSpec:
    if point.cpu_cores is None:
        return accelerator(point.accelerator)
    return cpu_accelerator(point.cpu_cores, ACCELERATORS["CPU"].memory_gib)


def replica_for(point: CalibrationPoint) -> ReplicaPerformance:
    """The modelled replica the point describes, with the default constants for its accelerator."""
    model = catalog_model(point.model)
    return replica_performance(
        model.architecture, point.dtype, _accelerator_for(point), point.tensor_parallel
    )


def predict(point: CalibrationPoint) -> float:
    """The model's value of ``point.metric`` under the point's conditions."""
    replica = replica_for(point)
    if point.metric == "decode_tokens_per_s":
        return replica.decode_tokens_per_second(point.batch_size, point.context_tokens)
    if point.metric == "tpot_s":
        return replica.decode_step_seconds(point.batch_size, point.context_tokens)
    if point.metric == "prefill_tokens_per_s":
        return point.context_tokens / replica.prefill_seconds(point.context_tokens)
    assert point.prompt_tokens is not None and point.output_tokens is not None
    return replica.serving_output_tokens_per_second(
        point.batch_size, point.prompt_tokens, point.output_tokens
    )


def calibration_table() -> list[CalibrationRow]:
    """Every calibration point with its prediction, in table order."""
    rows = []
    for point in CALIBRATION_POINTS:
        predicted = predict(point)
        rows.append(CalibrationRow(point, predicted, predicted / point.published))
    return rows
