"""Per-class metrics (``GatewayMetrics.observe``), the status summary, and the OpenAPI document."""

from __future__ import annotations

from dataclasses import replace

import pytest

from scheduler.config import demo_config
from scheduler.framework.routing import EndpointView, EngineLoad, PerfProfile
from scheduler.gateway.metrics import GatewayMetrics, bucket_quantile
from scheduler.gateway.openapi import openapi_document
from scheduler.gateway.proxy import Outcome
from scheduler.gateway.requests import FIELDS, Endpoint
from scheduler.types import Ownership, ReplicaState


def _endpoint(running: int) -> EndpointView:
    view = EndpointView(
        replica_id="r0", model="m", accelerator="H100-SXM", node_id="n0",
        url="http://127.0.0.1:9", state=ReplicaState.READY, price_per_hour=3.6,
        ownership=Ownership.ON_DEMAND,
        perf=PerfProfile(
            prefill_tokens_per_s=1.0, decode_step_base_s=0.01, decode_step_per_seq_s=0.0,
            kv_capacity_tokens=1000, max_num_seqs=8, max_context=1000,
        ),
    )
    return replace(view, load=EngineLoad(running=running))


def test_observe_records_tokens_latency_and_dollars_per_class() -> None:
    metrics = GatewayMetrics()
    stream = Outcome(_endpoint(running=3), 200, 0.2, e2e_s=2.2, first_token_s=0.2,
                     prompt_tokens=None, completion_tokens=21)
    metrics.observe("m", "interactive", stream, estimated_prompt_tokens=40)
    whole = Outcome(_endpoint(running=0), 200, 1.0, e2e_s=1.0, prompt_tokens=7,
                    completion_tokens=5)
    metrics.observe("m", "batch", whole, estimated_prompt_tokens=99)
    metrics.observe("m", "batch", Outcome(None, 503, None), estimated_prompt_tokens=99)
    get = metrics.registry.get_sample_value
    labels = {"traffic_class": "interactive", "model": "m", "accelerator": "H100-SXM"}
    assert get("gearshift_prompt_tokens_total", labels) == 40  # no usage: the estimate
    assert get("gearshift_completion_tokens_total", labels) == 21
    assert get("gearshift_time_to_first_token_seconds_count", labels) == 1
    assert get("gearshift_time_per_output_token_seconds_sum", labels) == pytest.approx(0.1)
    # $3.6/h = $0.001/s, 2.2 s shared by the 3 requests running at dispatch.
    assert get("gearshift_spent_dollars_total", labels) == pytest.approx(0.001 * 2.2 / 3)
    batch = {**labels, "traffic_class": "batch"}
    assert get("gearshift_prompt_tokens_total", batch) == 7  # the engine's usage wins
    assert get("gearshift_time_to_first_token_seconds_count", batch) is None  # not streamed
    assert get("gearshift_spent_dollars_total", batch) == pytest.approx(0.001)
    rows = {row["class"]: row for row in metrics.class_summary()}
    assert rows["batch"]["requests"] == 2
    assert rows["batch"]["ttft_p50_s"] is None
    assert rows["interactive"]["completion_tokens"] == 21
    assert 0.1 < rows["interactive"]["ttft_p50_s"] <= 0.25
    exposition = metrics.exposition().decode()
    assert "prompt" not in {line.split("{")[0] for line in exposition.splitlines()}


@pytest.mark.parametrize(
    ("q", "buckets", "expected"),
    [
        (0.5, [], None),
        (0.5, [(1.0, 0.0), (float("inf"), 0.0)], None),
        (0.5, [(1.0, 2.0), (2.0, 4.0), (float("inf"), 4.0)], 1.0),
        (0.75, [(1.0, 2.0), (2.0, 4.0), (float("inf"), 4.0)], 1.5),
        (0.99, [(1.0, 2.0), (float("inf"), 4.0)], 1.0),
    ],
)
def test_bucket_quantile(
    q: float, buckets: list[tuple[float, float]], expected: float | None
) -> None:
    assert bucket_quantile(q, buckets) == expected


def test_openapi_request_schemas_are_the_allowlist_with_the_configured_caps() -> None:
    gateway = demo_config().gateway
    document = openapi_document(gateway)
    schemas = document["components"]["schemas"]
    for name, endpoint in (("ChatCompletionRequest", Endpoint.CHAT),
                           ("CompletionRequest", Endpoint.COMPLETIONS)):
        schema = schemas[name]
        assert set(schema["properties"]) == set(FIELDS[endpoint])
        assert schema["additionalProperties"] is False
        assert schema["properties"]["n"]["maximum"] == gateway.max_n
        assert schema["properties"]["max_tokens"]["maximum"] == gateway.max_tokens_cap
    assert schemas["ErrorResponse"]["properties"]["error"]["required"] == [
        "message", "type", "param", "code"
    ]
    assert set(document["paths"]) == {
        "/v1/chat/completions", "/v1/completions", "/v1/models", "/v1/models/{model}"
    }
