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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from scheduler.errors import InvalidRequest
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


def _fail(param: str, message: str) -> InvalidRequest:
    return InvalidRequest(message, param=param, code="invalid_value")


def _number(low: float, high: float) -> Check:
    def check(param: str, value: Any) -> None:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise _fail(param, f"`{param}` must be a number")
        if not low <= value <= high:
            raise _fail(param, f"`{param}` must be between {low:g} and {high:g}, got {value}")

    return check


def _integer(low: int, high: int | None = None) -> Check:
    def check(param: str, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(param, f"`{param}` must be an integer")
        if value < low or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise _fail(param, f"`{param}` must be {bound}, got {value}")

    return check


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
    if value not in {tier.value for tier in ServiceTier}:
        allowed = ", ".join(tier.value for tier in ServiceTier)
        raise _fail(param, f"`{param}` must be one of {allowed}, got {value!r}")


def _one(param: str, value: Any) -> None:
    _integer(1, 1)(param, value)


_COMMON: dict[str, Check] = {
    "model": _string,
    "stream": _boolean,
    "stream_options": _stream_options,
    "max_tokens": _integer(1),
    "temperature": _number(0, 2),
    "top_p": _number(0, 1),
    "n": _one,
    "stop": _stop,
    "presence_penalty": _number(-2, 2),
    "frequency_penalty": _number(-2, 2),
    "seed": _integer(-(2**63), 2**63 - 1),
    "user": _string,
    "service_tier": _tier,
    "metadata": _metadata,
    # vLLM sampling extensions that benchmarks (vllm bench, guidellm) send.
    "top_k": _integer(-1, 1_000_000),
    "min_p": _number(0, 1),
    "min_tokens": _integer(0),
    "ignore_eos": _boolean,
    "repetition_penalty": _number(0.01, 10),
}

_FIELDS: dict[Endpoint, dict[str, Check]] = {
    Endpoint.CHAT: {
        **_COMMON,
        "messages": lambda param, value: None,  # checked with the prompt below
        "max_completion_tokens": _integer(1),
        "logprobs": _boolean,
        "top_logprobs": _integer(0, 20),
    },
    Endpoint.COMPLETIONS: {
        **_COMMON,
        "prompt": lambda param, value: None,  # checked with the prompt below
        "echo": _boolean,
        "logprobs": _integer(0, 5),
        "best_of": _one,
    },
}

_ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
_CHAT_TEMPLATE_TOKENS_PER_MESSAGE = 4


def estimate_tokens(text: str) -> int:
    """Rough token count for routing: about four UTF-8 bytes per token, at least one."""
    return max(1, len(text.encode("utf-8")) // 4)


def parse_request(endpoint: Endpoint, raw: bytes, *, max_tokens_cap: int) -> ParsedRequest:
    """Validate ``raw`` for ``endpoint``; ``InvalidRequest`` names the first bad field."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest(
            "We could not parse the JSON body of your request. The body must be a JSON object.",
            code="invalid_json",
        ) from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    fields = _FIELDS[endpoint]
    for key, value in body.items():
        check = fields.get(key)
        if check is None:
            raise InvalidRequest(
                f"Unrecognized request argument supplied: {key}",
                param=key,
                code="unknown_parameter",
            )
        if value is not None:
            check(key, value)
    model = body.get("model")
    if not model:
        raise InvalidRequest("You must provide a model parameter.", param="model", code="missing")
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
        role = message.get("role")
        if role not in _ROLES:
            raise _fail(f"{param}.role", f"`{param}.role` must be one of {sorted(_ROLES)}")
        tokens += _CHAT_TEMPLATE_TOKENS_PER_MESSAGE + _content_tokens(
            f"{param}.content", message.get("content"), role
        )
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
            if not isinstance(part, dict) or part.get("type") != "text":
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
