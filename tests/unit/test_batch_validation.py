"""Batch input validation: every way a line can be wrong is reported with its line number,
with the gateway's own body check (``gateway_body_check``) deciding what a body may hold."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from scheduler.batches.validation import (
    MAX_REPORTED_ERRORS,
    BodyCheck,
    input_lines,
    validate_input,
)
from scheduler.config import GatewayConfig
from scheduler.framework.routing import EndpointView, PerfProfile
from scheduler.gateway.batch_api import gateway_body_check
from scheduler.gateway.endpoints import EndpointTable, StaticFleetState
from scheduler.state import FleetState
from scheduler.types import Ownership, ReplicaState

MODEL = "m"
CHAT = "/v1/chat/completions"
MAX_CONTEXT = 64


def _endpoint() -> EndpointView:
    return EndpointView(
        replica_id="r0",
        model=MODEL,
        accelerator="L4",
        node_id="n0",
        url="http://127.0.0.1:9",
        state=ReplicaState.READY,
        price_per_hour=1.0,
        ownership=Ownership.ON_DEMAND,
        perf=PerfProfile(1000.0, 0.01, 0.001, 10_000, 16, MAX_CONTEXT),
    )


@pytest.fixture
def check() -> BodyCheck:
    state = FleetState(version=1, endpoints=(_endpoint(),), models=(MODEL, "other"))
    table = EndpointTable(StaticFleetState(state))
    table.state = state
    return gateway_body_check(GatewayConfig(max_body_bytes=2048, max_tokens_cap=32), table)


def line(custom_id: str = "a", **change: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "custom_id": custom_id,
        "method": "POST",
        "url": CHAT,
        "body": {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
    }
    body = change.pop("body", {})
    item.update(change)
    item["body"] = {**item["body"], **body} if isinstance(body, dict) else body
    return item


def raw(*items: dict[str, Any] | str) -> list[bytes]:
    return [(i if isinstance(i, str) else json.dumps(i)).encode() + b"\n" for i in items]


def run(
    lines: list[bytes], check: BodyCheck, *, max_lines: int = 100, max_bytes: int = 10**9
) -> tuple[Any, ...]:
    return validate_input(
        lines,
        size=sum(map(len, lines)),
        endpoint=CHAT,
        check_body=check,
        max_bytes=max_bytes,
        max_lines=max_lines,
    )


def test_a_valid_file_has_no_errors_and_one_model(check: BodyCheck) -> None:
    lines = raw(line("a"), line("b"), "", line("c", body={"max_tokens": 4}))
    errors, model, count = run(lines, check)
    assert errors == () and model == MODEL and count == 3
    parsed = list(input_lines(lines, CHAT))
    assert [(p.line_no, p.custom_id) for p in parsed] == [(1, "a"), (2, "b"), (4, "c")]
    assert parsed[2].body["max_tokens"] == 4


BAD_LINES: list[Any] = [
    pytest.param("{not json", "invalid_json_line", None, id="bad-json"),
    pytest.param('{"custom_id": "b", "x": NaN}', "invalid_json_line", None, id="nan"),
    pytest.param("[1, 2]", "invalid_json_line", None, id="not-an-object"),
    pytest.param(
        {k: v for k, v in line("b").items() if k != "custom_id"},
        "missing_required_parameter",
        "custom_id",
        id="missing-custom-id",
    ),
    pytest.param(line(""), "invalid_value", "custom_id", id="empty-custom-id"),
    pytest.param(line(7), "invalid_value", "custom_id", id="numeric-custom-id"),
    pytest.param(line("a"), "duplicate_custom_id", "custom_id", id="duplicate-custom-id"),
    pytest.param(line("b", method="GET"), "invalid_method", "method", id="get"),
    pytest.param(line("b", url="/v1/completions"), "invalid_url", "url", id="wrong-url"),
    pytest.param(line("b", extra=1), "unknown_parameter", "extra", id="unknown-key"),
    pytest.param(line("b", body=[1]), "invalid_value", "body", id="body-not-object"),
    pytest.param(
        line("b", body={"stream": True}), "stream_not_supported", "body.stream", id="stream-true"
    ),
    pytest.param(
        line("b", body={"model": "other"}), "mixed_models", "body.model", id="mixed-models"
    ),
    pytest.param(
        line("b", body={"tools": []}), "unknown_parameter", "body.tools", id="gateway-allowlist"
    ),
    pytest.param(
        line("b", body={"temperature": 5}), "invalid_value", "body.temperature", id="gateway-range"
    ),
    pytest.param(
        line("b", body={"max_tokens": 33}), "invalid_value", "body.max_tokens", id="gateway-cap"
    ),
    pytest.param(
        line("b", body={"messages": []}), "invalid_value", "body.messages", id="gateway-messages"
    ),
    pytest.param(
        line("b", body={"messages": [{"role": "user", "content": "x" * 400}]}),
        "context_length_exceeded",
        "body.messages",
        id="gateway-context",
    ),
    pytest.param(
        line("b", body={"user": "x" * 3000}), "body_too_large", "body", id="gateway-body-size"
    ),
]


@pytest.mark.parametrize(("bad", "code", "param"), BAD_LINES)
def test_a_bad_line_is_reported_with_its_number(
    check: BodyCheck, bad: dict[str, Any] | str, code: str, param: str | None
) -> None:
    errors, _, _ = run(raw(line("a"), "  ", bad, line("c")), check)
    assert [(e.line, e.code, e.param) for e in errors] == [(3, code, param)], errors
    assert errors[0].message


def test_a_model_the_fleet_does_not_serve_fails_on_its_line(check: BodyCheck) -> None:
    errors, _, _ = run(raw(line("a", body={"model": "nope"})), check)
    assert [(e.line, e.code, e.param) for e in errors] == [(1, "model_not_found", "body.model")]


def test_every_bad_line_is_reported(check: BodyCheck) -> None:
    lines = raw(line("a"), line("a"), line("c", method="PUT"), line("d"), "oops")
    errors, _, _ = run(lines, check)
    assert [(e.line, e.code) for e in errors] == [
        (2, "duplicate_custom_id"),
        (3, "invalid_method"),
        (5, "invalid_json_line"),
    ]


def test_more_lines_than_allowed(check: BodyCheck) -> None:
    errors, _, _ = run(raw(*(line(str(i)) for i in range(5))), check, max_lines=3)
    assert [(e.line, e.code, e.param) for e in errors] == [(4, "too_many_requests", None)]


def test_a_file_over_the_byte_limit_is_refused_unread(check: BodyCheck) -> None:
    def unread() -> Iterator[bytes]:
        raise AssertionError("the lines of a file over the limit are never read")
        yield b""

    errors, model, count = validate_input(
        unread(), size=2_000, endpoint=CHAT, check_body=check, max_bytes=1_000, max_lines=10
    )
    assert [(e.line, e.code) for e in errors] == [(None, "file_too_large")]
    assert (model, count) == (None, 0)


@pytest.mark.parametrize("lines", [[], [b"\n", b"   \n"]])
def test_a_file_without_requests_fails(check: BodyCheck, lines: list[bytes]) -> None:
    errors, _, _ = run(lines, check)
    assert [(e.line, e.code) for e in errors] == [(None, "empty_file")]


def test_errors_stop_at_the_reported_maximum(check: BodyCheck) -> None:
    errors, _, _ = run([b"nope\n"] * (MAX_REPORTED_ERRORS + 50), check, max_lines=10**6)
    assert len(errors) == MAX_REPORTED_ERRORS
    assert errors[-1].line == MAX_REPORTED_ERRORS
