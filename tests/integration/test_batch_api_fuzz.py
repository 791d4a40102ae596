"""Fuzz the Batch API routes in-process (``create_app`` behind Starlette's TestClient, store on
a temp dir): random methods, paths, ids, query strings, JSON bodies, raw bytes and multipart
forms. Every answer is below 500, and every 4xx is an OpenAI error envelope.

Deterministic (``derandomize=True``, no example database), like tests/fuzz.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from scheduler.batches import BatchStore
from scheduler.config import BatchConfig, demo_config
from scheduler.gateway.app import GatewayDeps, create_app
from scheduler.gateway.endpoints import EndpointTable, StaticFleetState
from scheduler.gateway.metrics import GatewayMetrics
from scheduler.gateway.proxy import EngineProxy
from scheduler.placement.demand import DemandTracker
from scheduler.plugins import PluginRegistry
from scheduler.routing.profiles import build_profiles
from scheduler.state import FleetState

pytestmark = pytest.mark.timeout(300)

MODEL = "m"
VALID_LINE = {
    "custom_id": "a",
    "method": "POST",
    "url": "/v1/completions",
    "body": {"model": MODEL, "prompt": "hi"},
}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, dict[str, str]]]:
    config = demo_config()
    table = EndpointTable(StaticFleetState(FleetState(version=1, models=(MODEL,))))

    async def refresh() -> None:
        async with aiohttp.ClientSession() as session:
            await table.refresh(session, timeout_s=1.0)

    asyncio.run(refresh())
    root: Path = tmp_path_factory.mktemp("batch")
    store = BatchStore.open(
        BatchConfig(store_path=str(root), max_file_bytes=4096, max_lines=20), mounts=""
    )
    deps = GatewayDeps(
        gateway=config.gateway,
        classes=config.traffic_classes,
        profiles=build_profiles(PluginRegistry.from_entry_points(), config.routing),
        table=table,
        proxy=EngineProxy.__new__(EngineProxy),  # never reached: no completion is routed
        metrics=GatewayMetrics(),
        rng=random.Random(0),
        demand=DemandTracker(60.0),
        batches=store,
    )
    with TestClient(create_app(deps), raise_server_exceptions=True) as test_client:
        file = test_client.post(
            "/v1/files",
            files={"file": ("in.jsonl", json.dumps(VALID_LINE).encode())},
            data={"purpose": "batch"},
        ).json()
        batch = test_client.post(
            "/v1/batches",
            json={
                "input_file_id": file["id"],
                "endpoint": "/v1/completions",
                "completion_window": "24h",
            },
        ).json()
        assert batch["status"] == "in_progress", batch
        kept = test_client.post(  # the routes test may delete `file`; creation uses this one
            "/v1/files",
            files={"file": ("in.jsonl", json.dumps(VALID_LINE).encode())},
            data={"purpose": "batch"},
        ).json()
        yield test_client, {"file": file["id"], "batch": batch["id"], "input": kept["id"]}
    store.close()


def check(response: Any) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:300])
    if 400 <= response.status_code < 500 and response.request.method != "HEAD":
        document = response.json()
        assert set(document) == {"error"}, document
        error = document["error"]
        assert set(error) == {"message", "type", "param", "code"}, error
        assert isinstance(error["message"], str) and error["message"]
        assert error["param"] is None or isinstance(error["param"], str)
        assert error["code"] is None or isinstance(error["code"], str)
        assert "Traceback" not in error["message"]


_FAST = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
TEXT = st.text(max_size=24)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)
QUERY = st.dictionaries(
    st.sampled_from(["after", "limit", "order", "purpose", "x"]),
    st.one_of(TEXT, st.integers(-5, 200_000).map(str), st.sampled_from(["asc", "desc"])),
    max_size=3,
)


@st.composite
def paths(draw: st.DrawFn, ids: dict[str, str]) -> str:
    some_id = draw(
        st.sampled_from([ids["file"], ids["batch"], "file-nope", "batch_nope", "..", "%2e%2e"])
        | st.text("abcdef0123456789-_.~%", min_size=1, max_size=30)
    )
    template = draw(
        st.sampled_from(
            [
                "/v1/files",
                "/v1/files/{}",
                "/v1/files/{}/content",
                "/v1/batches",
                "/v1/batches/{}",
                "/v1/batches/{}/cancel",
                "/v1/files/{}/x",
            ]
        )
    )
    return template.format(some_id)


@st.composite
def create_bodies(draw: st.DrawFn, ids: dict[str, str]) -> dict[str, Any]:
    """Half valid (with or without metadata), half with one to three fields broken."""
    body: dict[str, Any] = {
        "input_file_id": ids["input"],
        "endpoint": draw(st.sampled_from(["/v1/completions", "/v1/chat/completions"])),
        "completion_window": draw(st.sampled_from(["24h", "90s", "2h"])),
    }
    if draw(st.booleans()):
        body["metadata"] = draw(st.dictionaries(TEXT, TEXT, max_size=3))
    if draw(st.booleans()):
        return body
    for _ in range(draw(st.integers(1, 3))):
        key = draw(
            st.sampled_from(
                [*body, "metadata", "output_expires_after", "x", "input_file_id", "endpoint"]
            )
        )
        body[key] = draw(
            st.sampled_from(["file-nope", "/v1/embeddings", "1s", "24", ""]) | JSON_VALUES
        )
    return body


@st.composite
def multipart(draw: st.DrawFn) -> tuple[bytes, str]:
    """Half well-formed forms (a file and ``purpose=batch``, the file maybe over the limit),
    half broken ones."""
    well_formed = draw(st.booleans())
    boundary = "zz" if well_formed else draw(st.sampled_from(["zz", "a" * 70, ""]))
    names = (
        ["file", "purpose"]
        if well_formed
        else draw(st.lists(st.sampled_from(["file", "purpose", "x", ""]) | TEXT, max_size=3))
    )
    parts = []
    for name in names:
        if name == "file":
            filename = draw(st.sampled_from(["in.jsonl", "", "../../etc/passwd", None]))
            data = draw(
                st.sampled_from([json.dumps(VALID_LINE).encode(), b"x" * 5000])
                | st.binary(max_size=64)
            )
            if well_formed:
                filename = filename or "in.jsonl"
        else:
            filename = None
            data = b"batch" if well_formed else draw(st.binary(max_size=16))
        disposition = f'form-data; name="{name}"' + (
            f'; filename="{filename}"' if filename is not None else ""
        )
        parts.append(
            f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"
        )
    closing = f"--{boundary}--\r\n".encode()
    if not well_formed:
        closing = draw(st.sampled_from([closing, b"", b"--"]))
    return b"".join(parts) + closing, f"multipart/form-data; boundary={boundary}"


STATUSES: Counter[tuple[str, int]] = Counter()
"""Answers per test and status, checked at the end (the fuzzing reached the success paths)."""


def _fuzz(examples: int) -> settings:
    return settings(_FAST, max_examples=examples)


@_fuzz(600)
@given(data=st.data())
def test_routes_never_fail_with_a_5xx(
    client: tuple[TestClient, dict[str, str]], data: st.DataObject
) -> None:
    test_client, ids = client
    method = data.draw(st.sampled_from(["GET", "POST", "DELETE", "PUT", "HEAD", "OPTIONS"]))
    path = data.draw(paths(ids))
    query = data.draw(QUERY)
    how = data.draw(st.sampled_from(["none", "json", "raw", "multipart"]))
    kwargs: dict[str, Any] = {"params": query}
    if how == "json":
        kwargs["json"] = data.draw(JSON_VALUES)
    elif how == "raw":
        kwargs["content"] = data.draw(st.binary(max_size=128))
        kwargs["headers"] = {"content-type": data.draw(st.sampled_from(["text/plain", "", "x/y"]))}
    elif how == "multipart":
        body, content_type = data.draw(multipart())
        kwargs["content"], kwargs["headers"] = body, {"content-type": content_type}
    response = test_client.request(method, path, **kwargs)
    STATUSES["routes", response.status_code] += 1
    check(response)


@_fuzz(300)
@given(data=st.data())
def test_batch_creation_never_fails_with_a_5xx(
    client: tuple[TestClient, dict[str, str]], data: st.DataObject
) -> None:
    test_client, ids = client
    response = test_client.post("/v1/batches", json=data.draw(create_bodies(ids)))
    STATUSES["create", response.status_code] += 1
    check(response)
    if response.status_code == 200:
        assert response.json()["status"] in ("in_progress", "failed")


@_fuzz(300)
@given(data=st.data())
def test_uploads_never_fail_with_a_5xx(
    client: tuple[TestClient, dict[str, str]], data: st.DataObject
) -> None:
    test_client, _ = client
    body, content_type = data.draw(multipart())
    response = test_client.post("/v1/files", content=body, headers={"content-type": content_type})
    STATUSES["upload", response.status_code] += 1
    check(response)


def test_the_fuzzing_reached_success_and_refusal(
    client: tuple[TestClient, dict[str, str]],
) -> None:
    test_client, ids = client
    assert test_client.get(f"/v1/batches/{ids['batch']}").json()["id"] == ids["batch"]
    if len({name for name, _ in STATUSES}) < 3:
        pytest.skip("a -k selection ran only some of the fuzz tests")
    print(f"\nanswers by test and status: {dict(sorted(STATUSES.items()))}")
    for name in ("routes", "create", "upload"):
        assert STATUSES[name, 200] > 0, STATUSES
    assert STATUSES["create", 400] > 0 and STATUSES["upload", 400] > 0
    assert STATUSES["upload", 413] > 0, STATUSES


def test_the_served_document_describes_the_objects_returned(
    client: tuple[TestClient, dict[str, str]],
) -> None:
    test_client, ids = client
    document = test_client.get("/openapi.json").json()
    assert {"/v1/files/{file_id}/content", "/v1/batches/{batch_id}/cancel"} <= set(
        document["paths"]
    )
    schemas = document["components"]["schemas"]
    for name, path in (("Batch", f"/v1/batches/{ids['batch']}"), ("File", "/v1/files")):
        returned = test_client.get(path).json()
        shape = returned["data"][0] if name == "File" else returned
        assert set(schemas[name]["required"]) <= set(shape) <= set(schemas[name]["properties"])
