"""Validate an OpenAI chat/completions body against an allowlist before anything else sees it.

Unknown keys are rejected (as OpenAI does: "Unrecognized request argument supplied"), every
known key is type- and range-checked, and each failure names its field in ``param``. What
passes is forwarded to the engine minus the gateway's own fields (``service_tier``), plus the
engine ``priority`` of the request's class. Invalid input never reaches an engine.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from scheduler.errors import InvalidRequest
from scheduler.framework.routing import EndpointView
from scheduler.types import ServiceTier


class Endpoint(enum.StrEnum):
    CHAT = "/v1/chat/completions"
    COMPLETIONS = "/v1/completions"


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    """A validated request: what routing needs, and the body to forward."""

    endpoint: Endpoint
    model: str
    stream: bool
    service_tier: ServiceTier
    prompt_tokens: int
    max_tokens: int | None
    body: dict[str, Any]


Check = Callable[[str, Any], None]

DEFAULT_MAX_N = 4
"""Most choices (``n``) one request may ask for unless the caller passes its own cap."""


@dataclass(frozen=True, slots=True)
class Field:
    """One accepted body field: its check, and the JSON Schema stating the same rule.

    The OpenAPI document is built from ``schema``; the fuzz tests generate valid bodies from it,
    so the two cannot drift apart unnoticed.
    """

    check: Check
    schema: Mapping[str, Any]


def _fail(param: str, message: str) -> InvalidRequest:
    return InvalidRequest(message, param=param, code="invalid_value")


def _number(low: float, high: float) -> Field:
    def check(param: str, value: Any) -> None:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise _fail(param, f"`{param}` must be a number")
        if not low <= value <= high:
            raise _fail(param, f"`{param}` must be between {low:g} and {high:g}, got {value}")

    return Field(check, {"type": "number", "minimum": low, "maximum": high})


def _integer(low: int, high: int | None = None) -> Field:
    def check(param: str, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(param, f"`{param}` must be an integer")
        if value < low or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise _fail(param, f"`{param}` must be {bound}, got {value}")

    schema: dict[str, Any] = {"type": "integer", "minimum": low}
    if high is not None:
        schema["maximum"] = high
    return Field(check, schema)


def _boolean(param: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise _fail(param, f"`{param}` must be true or false")


def _string(param: str, value: Any) -> None:
    if not isinstance(value, str):
        raise _fail(param, f"`{param}` must be a string")


def _stop(param: str, value: Any) -> None:
    if isinstance(value, str):
        return
    if not isinstance(value, list) or len(value) > 4 or not all(isinstance(v, str) for v in value):
        raise _fail(param, f"`{param}` must be a string or a list of at most 4 strings")


def _stream_options(param: str, value: Any) -> None:
    if not isinstance(value, dict) or set(value) - {"include_usage"}:
        raise _fail(param, f"`{param}` must be an object with only `include_usage`")
    if "include_usage" in value:
        _boolean(f"{param}.include_usage", value["include_usage"])


def _metadata(param: str, value: Any) -> None:
    if not isinstance(value, dict) or len(value) > 16:
        raise _fail(param, f"`{param}` must be an object of at most 16 string pairs")
    for key, item in value.items():
        if not isinstance(item, str) or len(key) > 64 or len(item) > 512:
            raise _fail(param, f"`{param}` keys are at most 64 and values 512 characters")


def _tier(param: str, value: Any) -> None:
    if not isinstance(value, str) or value not in {tier.value for tier in ServiceTier}:
        allowed = ", ".join(tier.value for tier in ServiceTier)
        raise _fail(param, f"`{param}` must be one of {allowed}, got {value!r}")


def _checked_below(param: str, value: Any) -> None:
    """``messages`` and ``prompt`` are checked while their tokens are counted."""


_BOOLEAN = Field(_boolean, {"type": "boolean"})
_STRING = Field(_string, {"type": "string"})
_ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
_MESSAGE_KEYS = frozenset({"role", "content", "name", "tool_call_id", "tool_calls"})
_TEXT_PART_SCHEMA: Mapping[str, Any] = {
    "type": "object",
    "required": ["type", "text"],
    "additionalProperties": False,
    "properties": {"type": {"const": "text"}, "text": {"type": "string"}},
}
_TOOL_CALL_SCHEMA: Mapping[str, Any] = {
    "type": "object",
    "required": ["id", "type", "function"],
    "additionalProperties": False,
    "properties": {
        "id": {"type": "string"},
        "type": {"const": "function"},
        "function": {
            "type": "object",
            "required": ["name", "arguments"],
            "additionalProperties": False,
            "properties": {"name": {"type": "string"}, "arguments": {"type": "string"}},
        },
    },
}
_MESSAGE_SCHEMA: Mapping[str, Any] = {
    "type": "object",
    "description": "`content` may be null or absent only for the assistant and tool roles.",
    "required": ["role", "content"],
    "additionalProperties": False,
    "properties": {
        "role": {"enum": sorted(_ROLES)},
        "content": {
            "oneOf": [
                {"type": "string"},
                {"type": "array", "items": _TEXT_PART_SCHEMA},
            ]
        },
        "name": {"type": "string"},
        "tool_call_id": {"type": "string"},
        "tool_calls": {"type": "array", "items": _TOOL_CALL_SCHEMA},
    },
}

_COMMON: dict[str, Field] = {
    "model": _STRING,
    "stream": _BOOLEAN,
    "stream_options": Field(
        _stream_options,
        {
            "type": "object",
            "additionalProperties": False,
            "properties": {"include_usage": {"type": "boolean"}},
        },
    ),
    "max_tokens": _integer(1),
    "temperature": _number(0, 2),
    "top_p": _number(0, 1),
    "n": _integer(1),  # and at most the caller's cap, checked in parse_request
    "stop": Field(
        _stop,
        {
            "oneOf": [
                {"type": "string"},
                {"type": "array", "items": {"type": "string"}, "maxItems": 4},
            ]
        },
    ),
    "presence_penalty": _number(-2, 2),
    "frequency_penalty": _number(-2, 2),
    "seed": _integer(-(2**63), 2**63 - 1),
    "user": _STRING,
    "service_tier": Field(_tier, {"type": "string", "enum": [t.value for t in ServiceTier]}),
    "metadata": Field(
        _metadata,
        {
            "type": "object",
            "maxProperties": 16,
            "propertyNames": {"maxLength": 64},
            "additionalProperties": {"type": "string", "maxLength": 512},
        },
    ),
    # vLLM sampling extensions that benchmarks (vllm bench, guidellm) send.
    "top_k": _integer(-1, 1_000_000),
    "min_p": _number(0, 1),
    "min_tokens": _integer(0),
    "ignore_eos": _BOOLEAN,
    "repetition_penalty": _number(0.01, 10),
}

FIELDS: Mapping[Endpoint, Mapping[str, Field]] = {
    Endpoint.CHAT: {
        **_COMMON,
        "messages": Field(
            _checked_below, {"type": "array", "minItems": 1, "items": _MESSAGE_SCHEMA}
        ),
        "max_completion_tokens": _integer(1),
        "logprobs": _BOOLEAN,
        "top_logprobs": _integer(0, 20),
    },
    Endpoint.COMPLETIONS: {
        **_COMMON,
        "prompt": Field(
            _checked_below,
            {
                "oneOf": [
                    {"type": "string"},
                    {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 1},
                    {
                        "type": "array",
                        "items": {"type": "integer", "minimum": 0},
                        "minItems": 1,
                    },
                ]
            },
        ),
        "echo": _BOOLEAN,
        "logprobs": _integer(0, 5),
        "best_of": _integer(1, 1),
    },
}
"""The allowlist: every key a body may carry, per endpoint. Anything else is refused."""

_REQUIRED: Mapping[Endpoint, tuple[str, ...]] = {
    Endpoint.CHAT: ("model", "messages"),
    Endpoint.COMPLETIONS: ("model", "prompt"),
}


def request_schema(endpoint: Endpoint, *, max_tokens_cap: int, max_n: int) -> dict[str, Any]:
    """The JSON Schema of a body ``parse_request`` accepts (``null`` for any field means unset).

    Token counts against the model's context are checked as well but depend on the model.
    """
    properties = {key: dict(field.schema) for key, field in FIELDS[endpoint].items()}
    for key in ("max_tokens", "max_completion_tokens"):
        if key in properties:
            properties[key]["maximum"] = max_tokens_cap
    properties["n"]["maximum"] = max_n
    return {
        "type": "object",
        "required": list(_REQUIRED[endpoint]),
        "additionalProperties": False,
        "properties": properties,
    }


_CHAT_TEMPLATE_TOKENS_PER_MESSAGE = 4


def estimate_tokens(text: str) -> int:
    """Rough token count for routing: about four UTF-8 bytes per token, at least one."""
    return max(1, len(text.encode("utf-8")) // 4)


def parse_request(
    endpoint: Endpoint,
    raw: bytes,
    *,
    max_tokens_cap: int,
    max_n: int = DEFAULT_MAX_N,
    content_type: str | None = None,
) -> ParsedRequest:
    """Validate ``raw`` for ``endpoint``; ``InvalidRequest`` names the first bad field.

    ``content_type`` is the request's header: absent, or a JSON media type.
    """
    _check_content_type(content_type)
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidRequest(
            "We could not parse the JSON body of your request. The body must be a JSON object.",
            code="invalid_json",
        ) from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    fields = FIELDS[endpoint]
    for key, value in body.items():
        field = fields.get(key)
        if field is None:
            raise InvalidRequest(
                f"Unrecognized request argument supplied: {key}",
                param=key,
                code="unknown_parameter",
            )
        if value is not None:
            field.check(key, value)
    model = body.get("model")
    if not model:
        raise InvalidRequest("You must provide a model parameter.", param="model", code="missing")
    _check_choices(body, max_n)
    prompt_tokens = (
        _chat_prompt_tokens(body.get("messages"))
        if endpoint is Endpoint.CHAT
        else _completion_prompt_tokens(body.get("prompt"))
    )
    max_tokens = _max_tokens(endpoint, body, max_tokens_cap)
    tier = ServiceTier(body.get("service_tier") or ServiceTier.AUTO)
    forward = {key: value for key, value in body.items() if key != "service_tier"}
    return ParsedRequest(
        endpoint=endpoint,
        model=str(model),
        stream=bool(body.get("stream")),
        service_tier=tier,
        prompt_tokens=prompt_tokens,
        max_tokens=max_tokens,
        body=forward,
    )


def context_limit(endpoints: Iterable[EndpointView], model: str) -> int | None:
    """The largest context any replica of ``model`` takes, or None when none is known."""
    limits = [e.perf.max_context for e in endpoints if e.model == model]
    return max(limits) if limits else None


def check_context(parsed: ParsedRequest, max_context: int | None) -> None:
    """Refuse (400, ``context_length_exceeded``) a prompt plus completion the model cannot hold.

    Decided here rather than by routing so the answer is a 400 even when no replica is up or
    every replica is busy. A request without ``max_tokens`` needs room for one token.
    """
    if max_context is None:
        return
    completion = parsed.max_tokens or 1
    needed = parsed.prompt_tokens + completion
    if needed <= max_context:
        return
    where = "messages" if parsed.endpoint is Endpoint.CHAT else "prompt"
    raise InvalidRequest(
        f"This model's maximum context length is {max_context} tokens. However, you requested "
        f"{needed} tokens ({parsed.prompt_tokens} in the {where}, {completion} in the "
        f"completion). Please reduce the length of the {where} or completion.",
        param=where,
        code="context_length_exceeded",
    )


def _check_content_type(content_type: str | None) -> None:
    if content_type is None:
        return
    media = content_type.partition(";")[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise InvalidRequest(
            f"Content-Type must be application/json, got {content_type[:100]!r}.",
            code="unsupported_content_type",
        )


def _check_choices(body: Mapping[str, Any], max_n: int) -> None:
    n = body.get("n")
    if n is not None and n > max_n:
        raise _fail("n", f"`n` must be at most {max_n} on this deployment, got {n}")
    best_of = body.get("best_of")
    if best_of is not None and n is not None and best_of < n:
        raise _fail("best_of", f"`best_of` must be at least `n` ({n}), got {best_of}")


def _max_tokens(endpoint: Endpoint, body: Mapping[str, Any], cap: int) -> int | None:
    key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    value = body.get(key)
    if value is None:
        return None
    if value > cap:
        raise _fail(key, f"`{key}` must be at most {cap} on this deployment, got {value}")
    return int(value)


def _chat_prompt_tokens(messages: Any) -> int:
    if not isinstance(messages, list) or not messages:
        raise _fail("messages", "`messages` must be a non-empty list of message objects")
    tokens = 0
    for index, message in enumerate(messages):
        param = f"messages[{index}]"
        if not isinstance(message, dict):
            raise _fail(param, f"`{param}` must be an object with `role` and `content`")
        for key in message:
            if key not in _MESSAGE_KEYS:
                raise InvalidRequest(
                    f"Unrecognized argument in `{param}`: {key}",
                    param=f"{param}.{key}",
                    code="unknown_parameter",
                )
        role = message.get("role")
        if not isinstance(role, str) or role not in _ROLES:
            raise _fail(f"{param}.role", f"`{param}.role` must be one of {sorted(_ROLES)}")
        for key in ("name", "tool_call_id"):
            if message.get(key) is not None:
                _string(f"{param}.{key}", message[key])
        tokens += (
            _CHAT_TEMPLATE_TOKENS_PER_MESSAGE
            + _content_tokens(f"{param}.content", message.get("content"), role)
            + _tool_call_tokens(f"{param}.tool_calls", message.get("tool_calls"))
        )
    return tokens


def _tool_call_tokens(param: str, calls: Any) -> int:
    """Tool calls an assistant made earlier in the conversation (no new tools are accepted)."""
    if calls is None:
        return 0
    if not isinstance(calls, list):
        raise _fail(param, f"`{param}` must be a list of function calls")
    tokens = 0
    for index, call in enumerate(calls):
        where = f"{param}[{index}]"
        function = call.get("function") if isinstance(call, dict) else None
        if (
            not isinstance(call, dict)
            or set(call) != {"id", "type", "function"}
            or not isinstance(call["id"], str)
            or call["type"] != "function"
            or not isinstance(function, dict)
            or set(function) != {"name", "arguments"}
            or not all(isinstance(function[k], str) for k in ("name", "arguments"))
        ):
            raise _fail(
                where,
                f"`{where}` must be {{id, type: function, function: {{name, arguments}}}} "
                "with string values",
            )
        tokens += estimate_tokens(function["name"]) + estimate_tokens(function["arguments"])
    return tokens


def _content_tokens(param: str, content: Any, role: str) -> int:
    if content is None:
        if role in {"assistant", "tool"}:
            return 0
        raise _fail(param, f"`{param}` is required for role {role}")
    if isinstance(content, str):
        return estimate_tokens(content)
    if isinstance(content, list):
        tokens = 0
        for index, part in enumerate(content):
            if (
                not isinstance(part, dict)
                or part.get("type") != "text"
                or not set(part) <= {"type", "text"}
            ):
                raise _fail(
                    f"{param}[{index}]", "only text content parts are supported by this deployment"
                )
            text = part.get("text")
            if not isinstance(text, str):
                raise _fail(f"{param}[{index}].text", "`text` must be a string")
            tokens += estimate_tokens(text)
        return tokens
    raise _fail(param, f"`{param}` must be a string or a list of content parts")


def _completion_prompt_tokens(prompt: Any) -> int:
    if isinstance(prompt, str):
        return estimate_tokens(prompt)
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        return estimate_tokens(prompt[0])
    if (
        isinstance(prompt, list)
        and prompt
        and all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in prompt)
    ):
        return len(prompt)
    raise _fail(
        "prompt",
        "`prompt` must be a string, a list holding one string, or a list of token ids",
    )
