"""The sim engine's Prometheus metrics, under vLLM's names and labels so routers read it like vLLM.

Every engine app owns its own ``CollectorRegistry``; nothing touches prometheus-client's global
registry. Labels are ``model_name`` (the served model name) and ``engine`` (always ``"0"``).
Exposed as ``vllm:*`` (counters with ``_total``); the ``_created`` series are left out.

Latencies are wall-clock seconds on the event loop, as a client sees them: with ``time_scale``
above 1 they are that many times shorter than the performance model's figures.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import Metric

from nodes.engines.sim.batcher import ABORT

KV_BLOCK_SIZE = 16
ENGINE_INDEX = "0"
CONTENT_TYPE = CONTENT_TYPE_LATEST

# vLLM v1's bucket boundaries (vllm/v1/metrics/loggers.py), sized for LLM latencies.
TTFT_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
    160.0,
    640.0,
    2560.0,
)
ITL_BUCKETS = (
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
)
E2E_BUCKETS = (
    0.3,
    0.5,
    0.8,
    1.0,
    1.5,
    2.0,
    2.5,
    5.0,
    10.0,
    15.0,
    20.0,
    30.0,
    40.0,
    50.0,
    60.0,
    120.0,
    240.0,
    480.0,
    960.0,
    1920.0,
    7680.0,
)

_LABELS = ("model_name", "engine")


class EngineLoad(Protocol):
    """The live load figures the gauges read at scrape time (the batcher provides them)."""

    @property
    def num_running(self) -> int: ...

    @property
    def num_waiting(self) -> int: ...

    @property
    def kv_cache_usage(self) -> float: ...


class EngineMetrics:
    """The registry of one engine and the ``BatchObserver`` that feeds it.

    Counters and histograms move as the batcher reports progress; the load gauges read the
    batcher passed to ``watch`` when scraped (they read 0 until then).
    """

    def __init__(self, *, model_name: str, kv_capacity_tokens: int) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = {"model_name": model_name, "engine": ENGINE_INDEX}
        self._labels = labels

        def gauge(name: str, documentation: str) -> Gauge:
            return Gauge(name, documentation, _LABELS, registry=self.registry).labels(**labels)

        def counter(name: str, documentation: str) -> Counter:
            return Counter(name, documentation, _LABELS, registry=self.registry).labels(**labels)

        def histogram(name: str, documentation: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(
                name, documentation, _LABELS, registry=self.registry, buckets=buckets
            ).labels(**labels)

        self._running = gauge(
            "vllm:num_requests_running", "Number of requests in model execution batches."
        )
        self._waiting = gauge(
            "vllm:num_requests_waiting", "Number of requests waiting to be processed."
        )
        self._kv_usage = gauge(
            "vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage."
        )
        Gauge(
            "vllm:cache_config_info",
            "Information of the LLMEngine CacheConfig.",
            (*_LABELS, "block_size", "num_gpu_blocks"),
            registry=self.registry,
        ).labels(
            **labels,
            block_size=str(KV_BLOCK_SIZE),
            num_gpu_blocks=str(kv_capacity_tokens // KV_BLOCK_SIZE),
        ).set(1)
        self._prompt_tokens = counter("vllm:prompt_tokens", "Number of prefill tokens processed.")
        self._generation_tokens = counter(
            "vllm:generation_tokens", "Number of generation tokens processed."
        )
        self._preemptions = counter(
            "vllm:num_preemptions", "Cumulative number of preemptions from the engine."
        )
        self._success = Counter(
            "vllm:request_success",
            "Count of successfully processed requests.",
            (*_LABELS, "finished_reason"),
            registry=self.registry,
        )
        self._ttft = histogram(
            "vllm:time_to_first_token_seconds",
            "Histogram of time to first token in seconds.",
            TTFT_BUCKETS,
        )
        self._itl = histogram(
            "vllm:inter_token_latency_seconds",
            "Histogram of inter-token latency in seconds.",
            ITL_BUCKETS,
        )
        self._e2e = histogram(
            "vllm:e2e_request_latency_seconds",
            "Histogram of e2e request latency in seconds.",
            E2E_BUCKETS,
        )

    def watch(self, load: EngineLoad) -> None:
        """Make the load gauges read ``load`` from now on."""
        self._running.set_function(lambda: load.num_running)
        self._waiting.set_function(lambda: load.num_waiting)
        self._kv_usage.set_function(lambda: load.kv_cache_usage)

    # -- BatchObserver -----------------------------------------------------------------------

    def first_token(self, prompt_tokens: int, seconds_since_arrival: float) -> None:
        self._prompt_tokens.inc(prompt_tokens)
        self._generation_tokens.inc()
        self._ttft.observe(seconds_since_arrival)

    def next_token(self, seconds_since_previous: float) -> None:
        self._generation_tokens.inc()
        self._itl.observe(seconds_since_previous)

    def finished(self, finish_reason: str, seconds_since_arrival: float) -> None:
        self._success.labels(**self._labels, finished_reason=finish_reason).inc()
        if finish_reason != ABORT:
            self._e2e.observe(seconds_since_arrival)

    def preempted(self) -> None:
        self._preemptions.inc()

    # -- exposition --------------------------------------------------------------------------

    def render(self) -> bytes:
        """The Prometheus text exposition of this engine's metrics, without ``_created`` series."""
        return generate_latest(_WithoutCreated(self.registry))


class _WithoutCreated:
    """A collector view of a registry that drops the ``*_created`` samples.

    prometheus-client only offers a process-wide switch for them; this keeps the choice per app.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterable[Metric]:
        for metric in self._registry.collect():
            metric.samples = [s for s in metric.samples if not s.name.endswith("_created")]
            yield metric
