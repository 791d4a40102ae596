"""Fuzz the public endpoint (reliability §8 A1–A3, A5–A8): >= 10,000 generated requests.

The real app (``create_app``) runs in-process behind Starlette's TestClient, over one ready
replica whose engine is a recording fake. Requests are valid bodies generated from the
gateway's own OpenAPI document, mutations of them (wrong types, out-of-range values, unknown
and dangerous keys, huge strings), raw bytes with assorted content types, and random
methods and paths. For every response: never a 5xx; every 4xx is an OpenAI envelope; and
every body the fake engine receives carries only allowlisted keys and passes the validator
again (so nothing invalid is ever forwarded).

Deterministic (``derandomize=True``, no example database) so CI runs the same cases each time.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import string
from collections import Counter
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.responses import JSONResponse, Response
from starlette.testclient import TestClient

from scheduler.config import demo_config
from scheduler.framework.routing import EndpointView, EngineLoad, PerfProfile
from scheduler.gateway.app import GatewayDeps, create_app
from scheduler.gateway.endpoints import EndpointTable, StaticFleetState
from scheduler.gateway.metrics import GatewayMetrics
from scheduler.gateway.openapi import openapi_document
from scheduler.gateway.proxy import EngineProxy, Outcome, OutcomeHook
from scheduler.gateway.requests import FIELDS, Endpoint, parse_request
from scheduler.placement.demand import DemandTracker
from scheduler.plugins import PluginRegistry
from scheduler.routing.profiles import build_profiles
from scheduler.state import FleetState
from scheduler.types import Ownership, ReplicaState

MODEL = "fuzz-model"
MAX_CONTEXT = 200_000
DANGEROUS = (
    "chat_template_kwargs",
    "chat_template",
    "guided_decoding_backend",
    "guided_json",
    "guided_regex",
    "guided_grammar",
    "response_format",
    "tools",
    "tool_choice",
    "logits_processors",
    "allowed_token_ids",
    "prompt_embeds",
    "mm_processor_kwargs",
    "priority",
    "kv_transfer_params",
)
"""Keys vLLM would act on that the allowlist must never pass (``priority`` is the gateway's)."""

SENT: Counter[str] = Counter()
"""Requests sent per test, for the report at the end of the module."""


class RecordingProxy(EngineProxy):
    """The engine: records each forwarded body and answers 200 with a usage object."""

    def __init__(self) -> None:
        self.bodies: list[tuple[str, dict[str, Any]]] = []

    async def forward(
        self,
        picks: Any,
        path: str,
        body: dict[str, Any],
        *,
        stream: bool,
        tier: str,
        request_id: str,
        on_outcome: OutcomeHook,
        traffic_class: object = None,
    ) -> Response:
        self.bodies.append((path, json.loads(json.dumps(body))))
        on_outcome(
            Outcome(
                picks[0], 200, 0.01, e2e_s=0.05, first_token_s=0.01 if stream else None,
                prompt_tokens=3, completion_tokens=5,
            )
        )
        return JSONResponse({"object": "chat.completion", "choices": [], "service_tier": tier})


def _endpoint() -> EndpointView:
    return EndpointView(
        replica_id="r0",
        model=MODEL,
        accelerator="H100-SXM",
        node_id="n0",
        url="http://127.0.0.1:9",
        state=ReplicaState.READY,
        price_per_hour=2.0,
        ownership=Ownership.ON_DEMAND,
        perf=PerfProfile(
            prefill_tokens_per_s=10_000.0,
            decode_step_base_s=0.01,
            decode_step_per_seq_s=0.0005,
            kv_capacity_tokens=MAX_CONTEXT,
            max_num_seqs=64,
            max_context=MAX_CONTEXT,
        ),
    )


@pytest.fixture(scope="module")
def gateway() -> Iterator[tuple[TestClient, RecordingProxy]]:
    config = demo_config()

    async def scrape(_: aiohttp.ClientSession, __: EndpointView, ___: float) -> EngineLoad:
        return EngineLoad()

    table = EndpointTable(
        StaticFleetState(FleetState(version=1, endpoints=(_endpoint(),), models=(MODEL,))),
        scrape=scrape,
    )

    async def refresh() -> None:
        async with aiohttp.ClientSession() as session:
            await table.refresh(session, timeout_s=1.0)

    asyncio.run(refresh())
    proxy = RecordingProxy()
    deps = GatewayDeps(
        gateway=config.gateway,
        classes=config.traffic_classes,
        profiles=build_profiles(PluginRegistry.from_entry_points(), config.routing),
        table=table,
        proxy=proxy,
        metrics=GatewayMetrics(),
        rng=random.Random(0),
        demand=DemandTracker(60.0),
    )
    with TestClient(create_app(deps), raise_server_exceptions=True) as client:
        assert client.get("/openapi.json").json() == _DOCUMENT
        yield client, proxy
    print(f"\ngenerated requests: {dict(SENT)}, total {sum(SENT.values())}")
    if len(SENT) == 4:  # the whole module ran, not a -k selection
        assert sum(SENT.values()) >= 10_000


# ------------------------------------------------------------------ JSON Schema → strategies

_TEXT = st.text(max_size=24)


def from_schema(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values valid under the JSON Schema subset the gateway's OpenAPI document uses."""
    if "oneOf" in schema:
        return st.one_of([from_schema(option) for option in schema["oneOf"]])
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        return st.integers(schema.get("minimum"), schema.get("maximum"))
    if kind == "number":
        low, high = schema["minimum"], schema["maximum"]
        return st.floats(low, high, allow_nan=False) | st.integers(math.ceil(low), int(high))
    if kind == "string":
        return st.text(max_size=min(schema.get("maxLength", 24), 24))
    if kind == "array":
        return st.lists(
            from_schema(schema["items"]),
            min_size=schema.get("minItems", 0),
            max_size=min(schema.get("maxItems", 4), 4),
        )
    if kind == "object" and "properties" in schema:
        required = set(schema.get("required", ()))
        properties = schema["properties"]
        return st.fixed_dictionaries(
            {k: from_schema(v) for k, v in properties.items() if k in required},
            optional={k: from_schema(v) for k, v in properties.items() if k not in required},
        )
    if kind == "object":
        return st.dictionaries(
            st.text(max_size=schema.get("propertyNames", {}).get("maxLength", 24)),
            from_schema(schema["additionalProperties"]),
            max_size=min(schema.get("maxProperties", 4), 4),
        )
    raise AssertionError(f"schema construct the generator does not know: {schema}")


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | _TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=8,
)


_DOCUMENT = openapi_document(demo_config().gateway)
"""What the app serves at /openapi.json (the fixture checks); strategies are built once."""
SCHEMAS = {
    Endpoint.CHAT: _DOCUMENT["components"]["schemas"]["ChatCompletionRequest"],
    Endpoint.COMPLETIONS: _DOCUMENT["components"]["schemas"]["CompletionRequest"],
}


def valid_bodies(schema: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    def fix(body: dict[str, Any]) -> dict[str, Any]:
        body["model"] = MODEL
        if "best_of" in body and body.get("n", 1) > body["best_of"]:
            del body["best_of"]  # best_of >= n is a cross-field rule the schema cannot state
        return body

    return from_schema(schema).map(fix)


@st.composite
def mutated_bodies(draw: st.DrawFn, schema: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = draw(valid_bodies(schema))
    for _ in range(draw(st.integers(1, 3))):
        how = draw(st.sampled_from(["set", "dangerous", "unknown", "drop", "nested", "huge"]))
        keys = sorted(schema["properties"])
        if how == "set":
            body[draw(st.sampled_from(keys))] = draw(JSON_VALUES)
        elif how == "dangerous":
            body[draw(st.sampled_from(DANGEROUS))] = draw(JSON_VALUES)
        elif how == "unknown":
            body[draw(_TEXT)] = draw(JSON_VALUES)
        elif how == "drop" and body:
            body.pop(draw(st.sampled_from(sorted(body))))
        elif how == "nested" and isinstance(body.get("messages"), list) and body["messages"]:
            message = body["messages"][0]
            if isinstance(message, dict):
                message[draw(st.sampled_from(["role", "content", "name", "x", "tool_calls"]))] = (
                    draw(JSON_VALUES)
                )
        elif how == "huge":
            size = draw(st.sampled_from([10_000, 300_000, 900_000, 1_200_000]))
            key = "messages" if "messages" in schema["properties"] else "prompt"
            text = "x" * size
            body[key] = [{"role": "user", "content": text}] if key == "messages" else text
    return body


VALID = {endpoint: valid_bodies(schema) for endpoint, schema in SCHEMAS.items()}
MUTATED = {endpoint: mutated_bodies(schema) for endpoint, schema in SCHEMAS.items()}

# --------------------------------------------------------------------------------- checks


def check_response(response: Any) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:300])
    if 400 <= response.status_code < 500 and response.request.method != "HEAD":
        document = response.json()
        assert set(document) == {"error"}, document
        error = document["error"]
        assert set(error) == {"message", "type", "param", "code"}, error
        assert isinstance(error["message"], str) and error["message"]
        assert isinstance(error["type"], str)
        assert error["param"] is None or isinstance(error["param"], str)
        assert error["code"] is None or isinstance(error["code"], str)
        assert "Traceback" not in error["message"]


def check_forwarded(proxy: RecordingProxy, before: int) -> None:
    """Everything forwarded since ``before`` is allowlisted and valid."""
    for path, body in proxy.bodies[before:]:
        endpoint = Endpoint(path)
        assert not set(body) - set(FIELDS[endpoint]) - {"priority"}, body
        assert not set(body) & (set(DANGEROUS) - {"priority"})
        resent = {k: v for k, v in body.items() if k != "priority"}
        parse_request(endpoint, json.dumps(resent).encode(), max_tokens_cap=32_768)
    del proxy.bodies[before:]


def post(client: TestClient, endpoint: Endpoint, name: str, **kwargs: Any) -> Any:
    SENT[name] += 1
    return client.post(endpoint.value, **kwargs)


_FAST = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)


def _fuzz(examples: int) -> settings:
    return settings(_FAST, max_examples=examples)


ENDPOINTS = st.sampled_from([Endpoint.CHAT, Endpoint.COMPLETIONS])


# ---------------------------------------------------------------------------------- tests


@_fuzz(2_500)
@given(data=st.data())
def test_valid_bodies_from_the_openapi_document_are_served(
    gateway: tuple[TestClient, RecordingProxy], data: st.DataObject
) -> None:
    client, proxy = gateway
    endpoint = data.draw(ENDPOINTS)
    body = data.draw(VALID[endpoint])
    before = len(proxy.bodies)
    response = post(client, endpoint, "valid", json=body)
    assert response.status_code == 200, (body, response.text)
    assert len(proxy.bodies) == before + 1
    check_forwarded(proxy, before)


@_fuzz(3_500)
@given(data=st.data())
def test_mutated_bodies_are_refused_or_forwarded_clean(
    gateway: tuple[TestClient, RecordingProxy], data: st.DataObject
) -> None:
    client, proxy = gateway
    endpoint = data.draw(ENDPOINTS)
    body = data.draw(MUTATED[endpoint])
    stream = data.draw(st.booleans())
    if stream:
        body["stream"] = True
    before = len(proxy.bodies)
    response = post(client, endpoint, "mutated", json=body)
    check_response(response)
    if response.status_code != 200:
        assert len(proxy.bodies) == before, "an invalid request reached the engine"
        # A8: a refused stream is a plain JSON error, never a 200 event stream.
        assert response.headers["content-type"].startswith("application/json")
    if set(body) & set(DANGEROUS):
        assert response.status_code in (400, 413), "a dangerous key is never accepted"
    check_forwarded(proxy, before)


CONTENT_TYPES = st.sampled_from(
    [
        None,
        "application/json",
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=zz",
        "application/json; charset=latin-1",
        "",
        "*/*",
    ]
)
RAW = st.one_of(
    st.binary(max_size=256),
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    st.integers(1, 5_000).map(lambda depth: b"[" * depth + b"]" * depth),
    st.integers(1, 5_000).map(lambda depth: b'{"a":' * depth + b"1" + b"}" * depth),
    st.just(b'{"model": "fuzz-model", "messages": [{"role": "user", "content": "x"}]'),
    st.just(b'{"top_p": NaN, "model": "fuzz-model", "prompt": "x"}'),
    st.just(b'{"model": "fuzz-model", "prompt": "x", "seed": 1' + b"0" * 5000 + b"}"),
    st.just(b"\xef\xbb\xbf{}"),
)


@_fuzz(2_500)
@given(endpoint=ENDPOINTS, raw=RAW, content_type=CONTENT_TYPES)
def test_raw_bodies_and_content_types(
    gateway: tuple[TestClient, RecordingProxy],
    endpoint: Endpoint,
    raw: bytes,
    content_type: str | None,
) -> None:
    client, proxy = gateway
    headers = {} if content_type is None else {"content-type": content_type}
    before = len(proxy.bodies)
    response = post(client, endpoint, "raw", content=raw, headers=headers)
    check_response(response)
    if response.status_code != 200:
        assert len(proxy.bodies) == before
    check_forwarded(proxy, before)


PATHS = st.one_of(
    st.sampled_from(
        [
            "/v1/chat/completions",
            "/v1/completions",
            "/v1/models",
            f"/v1/models/{MODEL}",
            "/v1/models/nope",
            "/v1/embeddings",
            "/v1/responses",
            "/openapi.json",
            "/health",
            "/ready",
            "/metrics",
            "/",
            "/v2/chat/completions",
            "/v1/chat/completions/",
        ]
    ),
    st.text(string.ascii_letters + string.digits + "/-._~", max_size=40).map(lambda p: "/" + p),
)


@_fuzz(1_500)
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]),
    path=PATHS,
    body=st.none() | JSON_VALUES,
)
def test_methods_and_paths(
    gateway: tuple[TestClient, RecordingProxy], method: str, path: str, body: Any
) -> None:
    client, proxy = gateway
    before = len(proxy.bodies)
    SENT["paths"] += 1
    response = client.request(method, path, json=body)
    check_response(response)
    check_forwarded(proxy, before)


@pytest.mark.parametrize("endpoint", [Endpoint.CHAT, Endpoint.COMPLETIONS])
def test_refused_stream_is_a_plain_json_4xx(
    gateway: tuple[TestClient, RecordingProxy], endpoint: Endpoint
) -> None:
    client, proxy = gateway
    body = {"model": MODEL, "stream": True, "temperature": "hot", "prompt": "x",
            "messages": [{"role": "user", "content": "x"}]}
    body.pop("messages" if endpoint is Endpoint.COMPLETIONS else "prompt")
    before = len(proxy.bodies)
    response = client.post(endpoint.value, json=body)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["param"] == "temperature"
    assert len(proxy.bodies) == before


def test_prompt_beyond_the_context_is_a_400_naming_the_code(
    gateway: tuple[TestClient, RecordingProxy],
) -> None:
    client, proxy = gateway
    before = len(proxy.bodies)
    response = client.post(
        Endpoint.COMPLETIONS.value,
        json={"model": MODEL, "prompt": [1] * (MAX_CONTEXT - 10), "max_tokens": 11},
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "context_length_exceeded"
    assert response.json()["error"]["param"] == "prompt"
    assert len(proxy.bodies) == before
