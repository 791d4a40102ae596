"""Parse an engine's Prometheus ``/metrics`` text into the load signals routing uses.

Reads vLLM's names (the same ones llm-d and the Gateway API Inference Extension read):
``vllm:num_requests_running``, ``vllm:num_requests_waiting``, ``vllm:kv_cache_usage_perc``
(falling back to the removed ``vllm:gpu_cache_usage_perc`` of older engines).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

_RUNNING = "vllm:num_requests_running"
_WAITING = "vllm:num_requests_waiting"
_KV_USAGE = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")


@dataclass(frozen=True, slots=True)
class EngineMetrics:
    running: int
    waiting: int
    kv_usage: float


def parse_engine_metrics(text: str) -> EngineMetrics:
    """Sum running/waiting over every series; KV usage is the maximum over series.

    Lines that are not samples of these metrics are skipped, so it tolerates any exposition
    the engine adds. Missing metrics read as zero.
    """
    running = waiting = 0.0
    kv_usage: float | None = None
    legacy_kv: float | None = None
    for line in text.splitlines():
        sample = _sample(line)
        if sample is None:
            continue
        name, value = sample
        if name == _RUNNING:
            running += value
        elif name == _WAITING:
            waiting += value
        elif name == _KV_USAGE[0]:
            kv_usage = value if kv_usage is None else max(kv_usage, value)
        elif name == _KV_USAGE[1]:
            legacy_kv = value if legacy_kv is None else max(legacy_kv, value)
    usage = kv_usage if kv_usage is not None else (legacy_kv or 0.0)
    return EngineMetrics(int(running), int(waiting), min(1.0, max(0.0, usage)))


def _sample(line: str) -> tuple[str, float] | None:
    """``name{labels} value [timestamp]`` → (name, value); None for other lines."""
    if not line.startswith("vllm:"):
        return None
    brace = line.find("{")
    if brace >= 0:
        name, after = line[:brace], line[line.rfind("}") + 1 :]
    else:
        name, _, after = line.partition(" ")
    fields = after.split()
    if not fields:
        return None
    try:
        value = float(fields[0])
    except ValueError:
        return None
    return (name, value) if math.isfinite(value) else None
