"""The gateway's Prometheus metrics (its own registry; names follow Prometheus conventions).

Labels are bounded: model, traffic class, accelerator type, status code, reason. Never a
request id, key or prompt. ``observe`` records one answered request; ``class_summary`` reads
the registry back for the admin status document (same process, so no scrape).
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.samples import Sample

from scheduler.gateway.proxy import Outcome

disable_created_metrics()  # type: ignore[no-untyped-call]

_LATENCY_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
)
# Sized for LLM serving: TTFT 10 ms … 60 s, time per output token 1 ms … 2 s, whole request
# 50 ms … 10 min.
_TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0)
_TPOT_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.0
)  # fmt: skip
_E2E_BUCKETS = (
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0
)  # fmt: skip
_PER_CLASS = ["traffic_class", "model", "accelerator"]
_DECISION_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "gearshift_requests",
            "Requests answered, by model, class, accelerator that served and status code.",
            ["model", "traffic_class", "accelerator", "code"],
            registry=self.registry,
        )
        self.rejections = Counter(
            "gearshift_rejected_requests",
            "Requests refused before reaching an engine, by class and reason.",
            ["traffic_class", "reason"],
            registry=self.registry,
        )
        self.first_byte = Histogram(
            "gearshift_time_to_first_byte_seconds",
            "Gateway-observed time from request to the engine's first byte.",
            ["model", "traffic_class"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue_wait = Histogram(
            "gearshift_admission_wait_seconds",
            "Time an admitted request waited in the gateway's class queue (0 when none).",
            ["traffic_class"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.ttft = Histogram(
            "gearshift_time_to_first_token_seconds",
            "Streamed requests: time from dispatch to the first token chunk.",
            _PER_CLASS,
            buckets=_TTFT_BUCKETS,
            registry=self.registry,
        )
        self.tpot = Histogram(
            "gearshift_time_per_output_token_seconds",
            "Streamed requests: (end - first token) / (completion tokens - 1).",
            _PER_CLASS,
            buckets=_TPOT_BUCKETS,
            registry=self.registry,
        )
        self.e2e = Histogram(
            "gearshift_request_duration_seconds",
            "Successful requests: time from dispatch to the last byte.",
            _PER_CLASS,
            buckets=_E2E_BUCKETS,
            registry=self.registry,
        )
        self.prompt_tokens = Counter(
            "gearshift_prompt_tokens",
            "Prompt tokens of successful requests (the engine's usage, else the gateway's "
            "estimate).",
            _PER_CLASS,
            registry=self.registry,
        )
        self.completion_tokens = Counter(
            "gearshift_completion_tokens",
            "Completion tokens of successful requests (the engine's usage, else streamed "
            "chunks counted).",
            _PER_CLASS,
            registry=self.registry,
        )
        self.spent = Counter(
            "gearshift_spent_dollars",
            "Approximate $ spent serving requests: replica price_per_hour x request seconds / "
            "max(1, requests the engine was running when this one was dispatched).",
            _PER_CLASS,
            registry=self.registry,
        )
        self.routing = Histogram(
            "gearshift_routing_decision_seconds",
            "Time spent in the filter-score-pick pipeline.",
            ["traffic_class"],
            buckets=_DECISION_BUCKETS,
            registry=self.registry,
        )
        self.endpoints = Gauge(
            "gearshift_endpoints",
            "Replicas in the endpoint table, by model, accelerator and state.",
            ["model", "accelerator", "state"],
            registry=self.registry,
        )
        self.cost = Gauge(
            "gearshift_fleet_cost_dollars_per_hour",
            "What the running replicas cost per hour.",
            registry=self.registry,
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def observe(
        self, model: str, traffic_class: str, outcome: Outcome, estimated_prompt_tokens: int
    ) -> None:
        """Record one answered request (any status); latency, tokens and $ only on success."""
        endpoint = outcome.endpoint
        accelerator = endpoint.accelerator if endpoint else "none"
        self.requests.labels(model, traffic_class, accelerator, str(outcome.status)).inc()
        if outcome.first_byte_s is not None:
            self.first_byte.labels(model, traffic_class).observe(outcome.first_byte_s)
        if endpoint is None or outcome.status != 200 or outcome.e2e_s is None:
            return
        labels = (traffic_class, model, accelerator)
        completion = outcome.completion_tokens or 0
        self.e2e.labels(*labels).observe(outcome.e2e_s)
        self.prompt_tokens.labels(*labels).inc(
            outcome.prompt_tokens if outcome.prompt_tokens is not None else estimated_prompt_tokens
        )
        self.completion_tokens.labels(*labels).inc(completion)
        if outcome.first_token_s is not None:
            self.ttft.labels(*labels).observe(outcome.first_token_s)
            if completion > 1:
                decode_s = max(0.0, outcome.e2e_s - outcome.first_token_s)
                self.tpot.labels(*labels).observe(decode_s / (completion - 1))
        sharing = max(1, endpoint.load.running)
        self.spent.labels(*labels).inc(endpoint.price_per_hour / 3600.0 * outcome.e2e_s / sharing)

    def class_summary(self) -> list[dict[str, Any]]:
        """Per traffic class: requests, TTFT p50/p99 (from the buckets), tokens and $."""
        rows: dict[str, dict[str, Any]] = defaultdict(
            lambda: {
                "requests": 0.0,
                "prompt_tokens": 0.0,
                "completion_tokens": 0.0,
                "spent_dollars": 0.0,
            }
        )
        for sample in _samples(self.requests):
            if sample.name.endswith("_total"):
                rows[sample.labels["traffic_class"]]["requests"] += sample.value
        for key, counter in (
            ("prompt_tokens", self.prompt_tokens),
            ("completion_tokens", self.completion_tokens),
            ("spent_dollars", self.spent),
        ):
            for sample in _samples(counter):
                if sample.name.endswith("_total"):
                    rows[sample.labels["traffic_class"]][key] += sample.value
        buckets: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))
        for sample in _samples(self.ttft):
            if sample.name.endswith("_bucket"):
                le = float(sample.labels["le"])
                buckets[sample.labels["traffic_class"]][le] += sample.value
        summary = []
        for traffic_class in sorted(rows):
            cumulative = sorted(buckets.get(traffic_class, {}).items())
            summary.append(
                {
                    "class": traffic_class,
                    **rows[traffic_class],
                    "ttft_p50_s": bucket_quantile(0.5, cumulative),
                    "ttft_p99_s": bucket_quantile(0.99, cumulative),
                }
            )
        return summary


def _samples(metric: Counter | Histogram) -> list[Sample]:
    return [sample for family in metric.collect() for sample in family.samples]


def bucket_quantile(q: float, cumulative: list[tuple[float, float]]) -> float | None:
    """``histogram_quantile`` over cumulative ``(le, count)`` buckets, sorted by ``le``.

    Interpolates linearly inside the bucket holding the rank, as Prometheus does; a rank in the
    ``+Inf`` bucket answers the largest finite bound. None when nothing was observed.
    """
    if not cumulative or cumulative[-1][1] == 0:
        return None
    rank = q * cumulative[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in cumulative:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return lower_bound
