"""The OpenAI request and response shapes the sim engine speaks, and how a request becomes work.

Requests are read the way vLLM reads them: unknown fields are ignored, a missing ``model`` means
the served model, ``priority`` is an integer (lower is more urgent, default 0). This engine only
generates one choice per request: ``n`` must be 1, and a completions ``prompt`` is one string,
one list of token ids, or a list holding exactly one of those (a batch of prompts is refused).
Chat content is a string, null, or a list of ``{"type": "text", "text": ...}`` parts.

Output length: with ``ignore_eos`` the reply is exactly ``max_tokens`` long (or runs to the
context limit). Otherwise the pretend model stops after its natural length
(``text.natural_output_tokens``), cut at ``max_tokens``: finish reason ``stop`` when the natural
length fits, ``length`` when it was cut. Without ``max_tokens`` the cap is what the context
leaves after the prompt (vLLM's default; OpenAI's legacy default of 16 does not apply).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from nodes.engines.sim import text
from nodes.engines.sim.batcher import GenerationRequest
from scheduler.errors import InvalidRequest

Json = dict[str, Any]


class _Lenient(BaseModel):
    """Request parts ignore fields they do not know, as vLLM does."""

    model_config = ConfigDict(extra="ignore")


class StreamOptions(_Lenient):
    """``stream_options``: whether a final chunk carries the usage."""

    include_usage: bool = False


class ContentPart(_Lenient):
    """One part of a chat message's content; only ``text`` parts are understood."""

    type: str
    text: str | None = None


class ChatMessage(_Lenient):
    """One chat message; tool calls and names are ignored."""

    role: str
    content: str | list[ContentPart] | None = None


class _GenerationBody(_Lenient):
    model: str | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    n: int = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    priority: int = 0
    ignore_eos: bool = False


class ChatCompletionBody(_GenerationBody):
    """The body of ``POST /v1/chat/completions``."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)


class CompletionBody(_GenerationBody):
    """The body of ``POST /v1/completions``."""

    prompt: str | list[str] | list[int] | list[list[int]]


@dataclass(frozen=True)
class PreparedRequest:
    """A validated request: what the batcher runs and what the response needs to render."""

    generation: GenerationRequest
    digest: int
    stream: bool
    include_usage: bool


def prepare_chat(body: ChatCompletionBody, *, seed: int, max_model_len: int) -> PreparedRequest:
    """Size a chat request; raises ``InvalidRequest`` for what no retry can fix."""
    contents = [_message_text(message) for message in body.messages]
    canonical = json.dumps(
        [[message.role, content] for message, content in zip(body.messages, contents, strict=True)]
    )
    max_tokens = body.max_completion_tokens or body.max_tokens
    return _prepare(
        body,
        text.count_chat_tokens(contents),
        text.prompt_digest(canonical),
        max_tokens,
        seed=seed,
        max_model_len=max_model_len,
        prompt_noun="messages",
    )


def prepare_completion(body: CompletionBody, *, seed: int, max_model_len: int) -> PreparedRequest:
    """Size a completion request; raises ``InvalidRequest`` for what no retry can fix."""
    prompt: str | list[int] | list[str] | list[list[int]] = body.prompt
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], str | list):
        if len(prompt) != 1:
            raise InvalidRequest(
                "This engine serves one prompt per request; send a batch of prompts as "
                "separate requests.",
                param="prompt",
            )
        prompt = prompt[0]
    if isinstance(prompt, str):
        tokens, canonical = text.count_prompt_tokens(prompt), prompt
    else:
        if not prompt:
            raise InvalidRequest("The prompt must not be empty.", param="prompt")
        tokens, canonical = len(prompt), json.dumps(prompt)
    return _prepare(
        body,
        tokens,
        text.prompt_digest(canonical),
        body.max_tokens,
        seed=seed,
        max_model_len=max_model_len,
        prompt_noun="prompt",
    )


def _message_text(message: ChatMessage) -> str:
    if message.content is None or isinstance(message.content, str):
        return message.content or ""
    pieces: list[str] = []
    for part in message.content:
        if part.type != "text" or part.text is None:
            raise InvalidRequest(
                f"Content parts of type {part.type!r} are not supported; this engine reads "
                "text only.",
                param="messages",
            )
        pieces.append(part.text)
    return "\n".join(pieces)


def _prepare(
    body: _GenerationBody,
    prompt_tokens: int,
    digest: int,
    max_tokens: int | None,
    *,
    seed: int,
    max_model_len: int,
    prompt_noun: str,
) -> PreparedRequest:
    if body.n != 1:
        raise InvalidRequest(
            "This engine generates one choice per request: n must be 1.", param="n"
        )
    room = max_model_len - prompt_tokens
    if max_tokens is not None and max_tokens > room:
        raise InvalidRequest(
            f"This model's maximum context length is {max_model_len} tokens. However, you "
            f"requested {prompt_tokens + max_tokens} tokens ({prompt_tokens} in the "
            f"{prompt_noun}, {max_tokens} in the completion). Please reduce the length of the "
            f"{prompt_noun} or completion.",
            param="max_tokens",
        )
    if room < 1:
        raise InvalidRequest(
            f"This model's maximum context length is {max_model_len} tokens. However, your "
            f"request has {prompt_tokens} input tokens, which leaves no room for the completion. "
            f"Please reduce the length of the {prompt_noun}.",
            param=prompt_noun,
        )
    limit = room if max_tokens is None else max_tokens
    natural = text.natural_output_tokens(seed, digest)
    if body.ignore_eos or natural > limit:
        output_tokens, finish_reason = limit, "length"
    else:
        output_tokens, finish_reason = natural, "stop"
    include_usage = body.stream_options is not None and body.stream_options.include_usage
    return PreparedRequest(
        generation=GenerationRequest(
            prompt_tokens=prompt_tokens,
            output_tokens=output_tokens,
            finish_reason=finish_reason,
            priority=body.priority,
        ),
        digest=digest,
        stream=body.stream,
        include_usage=include_usage,
    )


def usage(prompt_tokens: int, completion_tokens: int) -> Json:
    """The ``usage`` object of a response."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


@dataclass(frozen=True)
class Renderer:
    """Builds the response objects of one request, for either endpoint.

    ``kind`` picks the shapes: ``chat`` gives ``chat.completion`` / ``chat.completion.chunk``
    objects with ``message`` / ``delta``; ``completion`` gives ``text_completion`` objects with
    ``text``. Every chunk carries ``"usage": null`` except the usage chunk.
    """

    kind: Literal["chat", "completion"]
    id: str
    created: int
    model: str

    def response(self, content: str, finish_reason: str | None, usage_: Json) -> Json:
        """The whole (non-streamed) response."""
        if self.kind == "chat":
            choice: Json = {"index": 0, "message": {"role": "assistant", "content": content}}
        else:
            choice = {"index": 0, "text": content}
        choice.update(logprobs=None, finish_reason=finish_reason)
        return self._envelope(
            "chat.completion" if self.kind == "chat" else "text_completion", [choice], usage_
        )

    def opening_chunks(self) -> list[Json]:
        """Chunks sent before the first token's: the chat role chunk, nothing for completions."""
        if self.kind == "chat":
            return [self._chunk({"role": "assistant", "content": ""}, None)]
        return []

    def token_chunk(self, piece: str) -> Json:
        """The chunk carrying one token's text."""
        return self._chunk({"content": piece} if self.kind == "chat" else piece, None)

    def final_chunk(self, finish_reason: str | None) -> Json:
        """The chunk that carries the finish reason and no text."""
        return self._chunk({} if self.kind == "chat" else "", finish_reason)

    def usage_chunk(self, usage_: Json) -> Json:
        """The last chunk when ``stream_options.include_usage``: empty choices and the usage."""
        return self._envelope(self._chunk_object, [], usage_)

    @property
    def _chunk_object(self) -> str:
        return "chat.completion.chunk" if self.kind == "chat" else "text_completion"

    def _chunk(self, delta_or_text: Json | str, finish_reason: str | None) -> Json:
        key = "delta" if self.kind == "chat" else "text"
        choice = {"index": 0, key: delta_or_text, "logprobs": None, "finish_reason": finish_reason}
        return self._envelope(self._chunk_object, [choice], None)

    def _envelope(self, object_: str, choices: list[Json], usage_: Json | None) -> Json:
        return {
            "id": self.id,
            "object": object_,
            "created": self.created,
            "model": self.model,
            "choices": choices,
            "usage": usage_,
        }
