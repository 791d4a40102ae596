"""Request validation (``parse_request``) and the HTTP error edge (``http_errors``)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from scheduler.errors import (
    CatalogError,
    ConfigError,
    ControlPlaneError,
    GearshiftError,
    InvalidRequest,
    ModelNotFound,
    NoCapacity,
    RequestTooLarge,
    UpstreamError,
)
from scheduler.gateway.classify import classify
from scheduler.gateway.http_errors import domain_error_response, normalize_upstream_error
from scheduler.gateway.requests import Endpoint, check_context, estimate_tokens, parse_request
from scheduler.types import ServiceTier, TrafficClass

CAP = 4096
CHAT, COMPLETIONS = Endpoint.CHAT, Endpoint.COMPLETIONS


def _raw(body: Any) -> bytes:
    return json.dumps(body).encode("utf-8")


def _chat(**fields: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}


# ------------------------------------------------------------------------------- valid bodies

_HELLO = "Hello there, how are you?"  # 25 bytes → 6 tokens


@pytest.mark.parametrize(
    ("endpoint", "body", "stream", "tier", "prompt_tokens", "max_tokens"),
    [
        pytest.param(
            CHAT,
            {"model": "m", "messages": [{"role": "user", "content": _HELLO}]},
            False, ServiceTier.AUTO, 4 + estimate_tokens(_HELLO), None,
            id="chat-string-content",
        ),
        pytest.param(
            CHAT,
            {"model": "m", "stream": True, "service_tier": "priority", "max_tokens": 64,
             "messages": [
                 {"role": "system", "content": "Be brief."},
                 {"role": "user", "content": [{"type": "text", "text": _HELLO},
                                              {"type": "text", "text": "x" * 40}]},
                 {"role": "assistant", "content": None},
             ]},
            True, ServiceTier.PRIORITY,
            3 * 4 + estimate_tokens("Be brief.") + estimate_tokens(_HELLO) + 10, 64,
            id="chat-content-parts",
        ),
        pytest.param(
            CHAT,
            {"model": "m", "messages": [{"role": "developer", "content": "x"}],
             "max_completion_tokens": 10, "max_tokens": 99, "service_tier": "flex",
             "stream": False, "stream_options": {"include_usage": True}, "temperature": 0,
             "top_p": 1, "n": 1, "stop": ["a", "b", "c", "d"], "seed": -5, "user": "u",
             "metadata": {"k": "v"}, "top_k": -1, "min_p": 0.0, "min_tokens": 0,
             "ignore_eos": True, "repetition_penalty": 1.1, "logprobs": True,
             "top_logprobs": 20, "presence_penalty": -2, "frequency_penalty": 2},
            False, ServiceTier.FLEX, 5, 10,
            id="chat-every-allowed-field",
        ),
        pytest.param(
            COMPLETIONS, {"model": "m", "prompt": "x" * 400, "max_tokens": 16},
            False, ServiceTier.AUTO, 100, 16, id="completion-string",
        ),
        pytest.param(
            COMPLETIONS, {"model": "m", "prompt": ["x" * 40], "service_tier": "default"},
            False, ServiceTier.DEFAULT, 10, None, id="completion-list-of-one-string",
        ),
        pytest.param(
            COMPLETIONS, {"model": "m", "prompt": [1, 2, 3, 0], "max_tokens": CAP,
                          "echo": False, "logprobs": 5, "best_of": 1},
            False, ServiceTier.AUTO, 4, CAP, id="completion-token-ids",
        ),
        pytest.param(
            COMPLETIONS, {"model": "m", "prompt": "é" * 8, "stream": None,
                          "service_tier": None},
            False, ServiceTier.AUTO, 4, None, id="completion-nulls-read-as-unset",
        ),
    ],
)
def test_parse_valid_bodies(
    endpoint: Endpoint, body: dict[str, Any], stream: bool, tier: ServiceTier,
    prompt_tokens: int, max_tokens: int | None,
) -> None:
    parsed = parse_request(endpoint, _raw(body), max_tokens_cap=CAP)
    assert parsed.endpoint is endpoint
    assert parsed.model == "m"
    assert parsed.stream is stream
    assert parsed.service_tier is tier
    assert parsed.prompt_tokens == prompt_tokens
    assert parsed.max_tokens == max_tokens


def test_service_tier_is_removed_from_the_forwarded_body() -> None:
    body = _chat(service_tier="priority", temperature=0.5, max_tokens=8)
    parsed = parse_request(CHAT, _raw(body), max_tokens_cap=CAP)
    expected = {k: v for k, v in body.items() if k != "service_tier"}
    assert parsed.body == expected
    assert parsed.service_tier is ServiceTier.PRIORITY


@pytest.mark.parametrize(
    ("tier", "traffic_class"),
    [
        (None, TrafficClass.STANDARD),
        ("auto", TrafficClass.STANDARD),
        ("default", TrafficClass.STANDARD),
        ("priority", TrafficClass.INTERACTIVE),
        ("flex", TrafficClass.BATCH),
    ],
)
def test_service_tier_classifies_the_request(
    tier: str | None, traffic_class: TrafficClass
) -> None:
    body = _chat() if tier is None else _chat(service_tier=tier)
    parsed = parse_request(CHAT, _raw(body), max_tokens_cap=CAP)
    assert classify(parsed.service_tier) is traffic_class


# ------------------------------------------------------------------------------- bad bodies


def _bad(**fields: Any) -> bytes:
    return _raw(_chat(**fields))


@pytest.mark.parametrize(
    ("endpoint", "raw", "param", "code"),
    [
        pytest.param(CHAT, b"{not json", None, "invalid_json", id="bad-json"),
        pytest.param(CHAT, b"\xff\xfe\x00", None, "invalid_json", id="not-utf8"),
        pytest.param(CHAT, b"[1, 2]", None, "invalid_json", id="non-object-body"),
        pytest.param(CHAT, b'"hello"', None, "invalid_json", id="string-body"),
        pytest.param(CHAT, _bad(guided_decoding_backend="xgrammar"), "guided_decoding_backend",
                     "unknown_parameter", id="unknown-key"),
        pytest.param(COMPLETIONS, _raw({"model": "m", "prompt": "x", "messages": []}),
                     "messages", "unknown_parameter", id="chat-key-on-completions"),
        pytest.param(CHAT, _raw({"messages": [{"role": "user", "content": "x"}]}), "model",
                     "missing", id="missing-model"),
        pytest.param(CHAT, _bad(model=""), "model", "missing", id="empty-model"),
        pytest.param(CHAT, _bad(model=7), "model", "invalid_value", id="model-not-a-string"),
        pytest.param(CHAT, _bad(messages={"role": "user", "content": "x"}), "messages",
                     "invalid_value", id="messages-as-dict"),
        pytest.param(CHAT, _bad(messages=[]), "messages", "invalid_value", id="empty-messages"),
        pytest.param(CHAT, _raw({"model": "m"}), "messages", "invalid_value",
                     id="missing-messages"),
        pytest.param(CHAT, _bad(messages=["hi"]), "messages[0]", "invalid_value",
                     id="message-not-an-object"),
        pytest.param(CHAT, _bad(messages=[{"role": "user", "content": "x"},
                                          {"role": "wizard", "content": "x"}]),
                     "messages[1].role", "invalid_value", id="bad-role"),
        pytest.param(CHAT, _bad(messages=[{"role": "user"}]), "messages[0].content",
                     "invalid_value", id="user-without-content"),
        pytest.param(CHAT, _bad(messages=[{"role": "user", "content": [{"type": "image_url"}]}]),
                     "messages[0].content[0]", "invalid_value", id="non-text-part"),
        pytest.param(CHAT, _bad(messages=[{"role": "user", "content": [{"type": "text"}]}]),
                     "messages[0].content[0].text", "invalid_value", id="part-without-text"),
        pytest.param(CHAT, _bad(messages=[{"role": "user", "content": 5}]),
                     "messages[0].content", "invalid_value", id="content-a-number"),
        pytest.param(CHAT, _bad(temperature="hot"), "temperature", "invalid_value",
                     id="temperature-hot"),
        pytest.param(CHAT, _bad(temperature=2.5), "temperature", "invalid_value",
                     id="temperature-out-of-range"),
        pytest.param(CHAT, _bad(temperature=True), "temperature", "invalid_value",
                     id="temperature-bool"),
        pytest.param(CHAT, b'{"model": "m", "messages": [{"role": "user", "content": "x"}],'
                           b' "top_p": NaN}', "top_p", "invalid_value", id="top-p-nan"),
        pytest.param(CHAT, _bad(max_tokens=-1), "max_tokens", "invalid_value",
                     id="max-tokens-negative"),
        pytest.param(CHAT, _bad(max_tokens=0), "max_tokens", "invalid_value",
                     id="max-tokens-zero"),
        pytest.param(CHAT, _bad(max_tokens=1.5), "max_tokens", "invalid_value",
                     id="max-tokens-float"),
        pytest.param(CHAT, _bad(max_tokens=CAP + 1), "max_tokens", "invalid_value",
                     id="max-tokens-above-cap"),
        pytest.param(CHAT, _bad(max_completion_tokens=CAP + 1), "max_completion_tokens",
                     "invalid_value", id="max-completion-tokens-above-cap"),
        pytest.param(CHAT, _bad(n=5), "n", "invalid_value", id="n-above-default-cap"),
        pytest.param(CHAT, _bad(n=0), "n", "invalid_value", id="n-0"),
        pytest.param(CHAT, _bad(chat_template_kwargs={"x": 1}), "chat_template_kwargs",
                     "unknown_parameter", id="chat-template-kwargs"),
        pytest.param(CHAT, _bad(chat_template="{{ x }}"), "chat_template",
                     "unknown_parameter", id="chat-template"),
        pytest.param(CHAT, _bad(response_format={"type": "json_schema"}), "response_format",
                     "unknown_parameter", id="response-format"),
        pytest.param(CHAT, _bad(tools=[{"type": "function"}]), "tools", "unknown_parameter",
                     id="tools"),
        pytest.param(CHAT, _bad(messages=[{"role": "user", "content": "x", "chat_template": "y"}]),
                     "messages[0].chat_template", "unknown_parameter", id="message-extra-key"),
        pytest.param(CHAT, _bad(messages=[{"role": "user", "content": [
                         {"type": "text", "text": "x", "pattern": "(a+)+"}]}]),
                     "messages[0].content[0]", "invalid_value", id="part-extra-key"),
        pytest.param(CHAT, _bad(messages=[{"role": "user", "content": "x", "name": 3}]),
                     "messages[0].name", "invalid_value", id="message-name-not-a-string"),
        pytest.param(CHAT, _bad(messages=[{"role": "assistant", "content": None,
                                           "tool_calls": [{"id": "1", "type": "regex"}]}]),
                     "messages[0].tool_calls[0]", "invalid_value", id="malformed-tool-call"),
        pytest.param(CHAT, _bad(messages=[{"role": "assistant", "tool_calls": "x"}]),
                     "messages[0].tool_calls", "invalid_value", id="tool-calls-not-a-list"),
        pytest.param(CHAT, _bad(top_logprobs=-1), "top_logprobs", "invalid_value",
                     id="top-logprobs-negative"),
        pytest.param(CHAT, _bad(logprobs=3), "logprobs", "invalid_value",
                     id="chat-logprobs-not-bool"),
        pytest.param(COMPLETIONS, _raw({"model": "m", "prompt": "x", "logprobs": 6}),
                     "logprobs", "invalid_value", id="completion-logprobs-above-5"),
        pytest.param(COMPLETIONS, _raw({"model": "m", "prompt": "x", "n": 2, "best_of": 1}),
                     "best_of", "invalid_value", id="best-of-below-n"),
        pytest.param(CHAT, b"[" * 100_000 + b"]" * 100_000, None, "invalid_json",
                     id="deeply-nested-json"),
        pytest.param(CHAT, _bad(top_k=0.01), "top_k", "invalid_value", id="top-k-float"),
        pytest.param(CHAT, _bad(service_tier="gold"), "service_tier", "invalid_value",
                     id="service-tier-gold"),
        pytest.param(CHAT, _bad(stream="yes"), "stream", "invalid_value", id="stream-yes"),
        pytest.param(CHAT, _bad(stop=["a", "b", "c", "d", "e"]), "stop", "invalid_value",
                     id="stop-five-strings"),
        pytest.param(CHAT, _bad(stop=[1]), "stop", "invalid_value", id="stop-not-strings"),
        pytest.param(CHAT, _bad(stream_options={"include_usage": "yes"}),
                     "stream_options.include_usage", "invalid_value", id="stream-options"),
        pytest.param(CHAT, _bad(stream_options={"other": True}), "stream_options",
                     "invalid_value", id="stream-options-unknown-key"),
        pytest.param(CHAT, _bad(metadata={"k": 1}), "metadata", "invalid_value",
                     id="metadata-not-strings"),
        pytest.param(CHAT, _bad(top_logprobs=21), "top_logprobs", "invalid_value",
                     id="top-logprobs"),
        pytest.param(COMPLETIONS, _raw({"model": "m", "prompt": 42}), "prompt", "invalid_value",
                     id="prompt-int"),
        pytest.param(COMPLETIONS, _raw({"model": "m", "prompt": ["a", "b"]}), "prompt",
                     "invalid_value", id="prompt-two-strings"),
        pytest.param(COMPLETIONS, _raw({"model": "m", "prompt": []}), "prompt",
                     "invalid_value", id="prompt-empty-list"),
        pytest.param(COMPLETIONS, _raw({"model": "m", "prompt": [1, -2]}), "prompt",
                     "invalid_value", id="prompt-negative-token"),
        pytest.param(COMPLETIONS, _raw({"model": "m"}), "prompt", "invalid_value",
                     id="prompt-missing"),
        pytest.param(COMPLETIONS, _raw({"model": "m", "prompt": "x", "best_of": 3}), "best_of",
                     "invalid_value", id="best-of"),
    ],
)
def test_parse_errors_name_the_param(
    endpoint: Endpoint, raw: bytes, param: str | None, code: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_request(endpoint, raw, max_tokens_cap=CAP)
    error = caught.value
    assert error.param == param
    assert error.code == code
    assert error.message
    if param is not None:
        field_name = re.sub(r"\[\d+\]", "", param).split(".")[-1]
        assert field_name in error.message, "the message should name the field too"


def test_n_cap_is_configurable() -> None:
    assert parse_request(CHAT, _bad(n=4), max_tokens_cap=CAP).body["n"] == 4
    assert parse_request(CHAT, _bad(n=8), max_tokens_cap=CAP, max_n=8).body["n"] == 8
    with pytest.raises(InvalidRequest) as caught:
        parse_request(CHAT, _bad(n=2), max_tokens_cap=CAP, max_n=1)
    assert caught.value.param == "n"


def test_assistant_tool_calls_in_history_are_accepted_and_counted() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "x" * 400}}
    body = _chat(messages=[
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "content": "42", "tool_call_id": "c1", "name": "f"},
    ])
    parsed = parse_request(CHAT, _raw(body), max_tokens_cap=CAP)
    assert parsed.prompt_tokens >= 100


@pytest.mark.parametrize(
    ("content_type", "accepted"),
    [
        (None, True),
        ("application/json", True),
        ("application/json; charset=utf-8", True),
        ("application/vnd.api+json", True),
        ("text/plain", False),
        ("application/x-www-form-urlencoded", False),
        ("multipart/form-data; boundary=x", False),
    ],
)
def test_content_type_must_be_json(content_type: str | None, accepted: bool) -> None:
    if accepted:
        parse_request(CHAT, _bad(), max_tokens_cap=CAP, content_type=content_type)
        return
    with pytest.raises(InvalidRequest) as caught:
        parse_request(CHAT, _bad(), max_tokens_cap=CAP, content_type=content_type)
    assert caught.value.code == "unsupported_content_type"


@pytest.mark.parametrize(
    ("endpoint", "body", "limit", "param"),
    [
        (CHAT, _chat(messages=[{"role": "user", "content": "x" * 400}], max_tokens=10), 100,
         "messages"),
        (COMPLETIONS, {"model": "m", "prompt": [1] * 90, "max_tokens": 11}, 100, "prompt"),
        (COMPLETIONS, {"model": "m", "prompt": [1] * 100}, 100, "prompt"),
    ],
)
def test_context_length_exceeded(
    endpoint: Endpoint, body: dict[str, Any], limit: int, param: str
) -> None:
    parsed = parse_request(endpoint, _raw(body), max_tokens_cap=CAP)
    with pytest.raises(InvalidRequest) as caught:
        check_context(parsed, limit)
    assert caught.value.code == "context_length_exceeded"
    assert caught.value.param == param
    assert str(limit) in caught.value.message


def test_context_that_fits_or_is_unknown_passes() -> None:
    parsed = parse_request(
        COMPLETIONS, _raw({"model": "m", "prompt": [1] * 90, "max_tokens": 10}),
        max_tokens_cap=CAP,
    )
    check_context(parsed, 100)
    check_context(parsed, None)


def test_unknown_key_message_is_openais() -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_request(CHAT, _bad(guided_decoding_backend="x"), max_tokens_cap=CAP)
    assert caught.value.message == "Unrecognized request argument supplied: guided_decoding_backend"


# ------------------------------------------------------------------------------ http_errors


_ERRORS: list[tuple[GearshiftError, int, str, str | None, str | None]] = [
    (InvalidRequest("bad", param="temperature", code="invalid_value"), 400,
     "invalid_request_error", "temperature", "invalid_value"),
    (RequestTooLarge("too big"), 413, "invalid_request_error", None, None),
    (ModelNotFound("nope"), 404, "invalid_request_error", "model", "model_not_found"),
    (NoCapacity("busy", retry_after_s=2.2), 503, "server_error", None, "no_capacity"),
    (UpstreamError("engine died", status=500), 502, "server_error", None, "upstream_error"),
    (ControlPlaneError("ray is down"), 500, "server_error", None, None),
    (ConfigError("bad config"), 500, "server_error", None, None),
    (CatalogError("unknown card"), 500, "server_error", None, None),
]


def _body(response: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(bytes(response.body))
    return data


@pytest.mark.parametrize(
    ("exc", "status", "type_", "param", "code"), _ERRORS, ids=[type(e[0]).__name__ for e in _ERRORS]
)
def test_domain_error_response(
    exc: GearshiftError, status: int, type_: str, param: str | None, code: str | None
) -> None:
    response = domain_error_response(exc)
    assert response.status_code == status
    body = _body(response)
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == type_
    assert body["error"]["param"] == param
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


def test_internal_errors_do_not_leak_their_message() -> None:
    body = _body(domain_error_response(ControlPlaneError("secret at 10.0.0.7:6379")))
    assert "10.0.0.7" not in body["error"]["message"]


@pytest.mark.parametrize(("retry_after_s", "header"), [(0.01, "1"), (1.0, "1"), (2.2, "3"),
                                                       (30.0, "30")])
def test_no_capacity_sends_retry_after_of_at_least_one_second(
    retry_after_s: float, header: str
) -> None:
    response = domain_error_response(NoCapacity("busy", retry_after_s=retry_after_s))
    assert response.headers["retry-after"] == header
    assert int(response.headers["retry-after"]) >= 1


_VLLM_NESTED = {
    "error": {"message": "max_tokens must be at least 1, got -3.", "type": "BadRequestError",
              "param": "max_tokens", "code": 400}
}
_VLLM_FLAT = {
    "object": "error", "message": "max_tokens must be at least 1, got -3.",
    "type": "BadRequestError", "param": "max_tokens", "code": 400,
}


@pytest.mark.parametrize(
    ("status", "body", "out_status", "message", "param", "type_"),
    [
        pytest.param(400, _raw(_VLLM_NESTED), 400, "max_tokens must be at least 1, got -3.",
                     "max_tokens", "invalid_request_error", id="vllm-400"),
        pytest.param(404, _raw({"error": {"message": "The model `x` does not exist."}}), 404,
                     "The model `x` does not exist.", None, "invalid_request_error",
                     id="vllm-404"),
        pytest.param(502, b"Bad Gateway\n", 502, "The engine failed: Bad Gateway", None,
                     "server_error", id="plain-text-502"),
        pytest.param(500, b"", 502, "The engine failed: empty response from the engine", None,
                     "server_error", id="empty-500"),
        pytest.param(500, _raw(_VLLM_NESTED), 502,
                     "The engine failed: max_tokens must be at least 1, got -3.", None,
                     "server_error", id="json-500-becomes-502"),
        pytest.param(503, b"[1, 2]", 502, "The engine failed: [1, 2]", None, "server_error",
                     id="json-not-an-object"),
        pytest.param(400, b"x" * 2000, 400, "x" * 500, None, "invalid_request_error",
                     id="long-text-truncated"),
    ],
)
def test_normalize_upstream_error(
    status: int, body: bytes, out_status: int, message: str, param: str | None, type_: str
) -> None:
    response = normalize_upstream_error(status, body)
    assert response.status_code == out_status
    error = _body(response)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["message"], error["param"], error["type"]) == (message, param, type_)
    if out_status == 502:
        assert error["code"] == "upstream_error"


def test_normalize_upstream_error_keeps_the_message_of_vllms_flat_shape() -> None:
    error = _body(normalize_upstream_error(400, _raw(_VLLM_FLAT)))["error"]
    assert error["message"] == _VLLM_FLAT["message"]


def test_normalize_upstream_error_keeps_the_param_of_vllms_flat_shape() -> None:
    error = _body(normalize_upstream_error(400, _raw(_VLLM_FLAT)))["error"]
    assert error["param"] == "max_tokens"
