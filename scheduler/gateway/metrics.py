"""The gateway's Prometheus metrics (its own registry; names follow Prometheus conventions).

Labels are bounded: model, traffic class, accelerator type, status code, reason. Never a
request id, key or prompt.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

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
