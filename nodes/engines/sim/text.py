"""Deterministic stand-in text and token counts, so the sim engine needs no tokenizer or model.

Token counting (an approximation, documented because routers and tests depend on it):

* a piece of text costs one token per 4 UTF-8 bytes, rounded up, which is about what BPE
  tokenizers average on English;
* a chat request adds its template: 3 tokens per message (role and delimiters) and 3 for the
  assistant reply primer, the rule OpenAI documents for its chat format;
* every prompt costs at least one token.

Generated text: token ``i`` of a reply is a word picked by hashing (seed, prompt digest, ``i``).
The same request on the same engine therefore always reads the same, and a token's text does not
depend on which other requests shared its batch. The natural reply length, the point where a
real model would emit end-of-sequence, is derived the same way and lies in
[``MIN_NATURAL_TOKENS``, ``MAX_NATURAL_TOKENS``].
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

BYTES_PER_TOKEN = 4
MESSAGE_TEMPLATE_TOKENS = 3
REPLY_PRIMER_TOKENS = 3
MIN_NATURAL_TOKENS = 8
MAX_NATURAL_TOKENS = 256

_MASK64 = (1 << 64) - 1

_WORDS = (
    "the",
    "fleet",
    "serves",
    "tokens",
    "quickly",
    "while",
    "batch",
    "work",
    "waits",
    "for",
    "idle",
    "cards",
    "and",
    "every",
    "request",
    "pays",
    "only",
    "speed",
    "it",
    "needs",
    "a",
    "replica",
    "streams",
    "its",
    "answer",
    "from",
    "cache",
    "memory",
    "bandwidth",
    "sets",
    "pace",
    "of",
    "decode",
    "prefill",
    "runs",
    "once",
    "per",
    "prompt",
    "so",
    "latency",
    "stays",
    "low",
    "when",
    "queue",
    "is",
    "short",
    "gearshift",
    "routes",
    "traffic",
    "to",
    "cheap",
    "hardware",
    "whenever",
    "targets",
    "allow",
    "model",
    "weights",
    "fit",
    "on",
    "one",
    "accelerator",
    "today.",
)


def count_text_tokens(text: str) -> int:
    """Tokens a piece of text costs: one per 4 UTF-8 bytes, rounded up (0 if empty)."""
    return -(-len(text.encode("utf-8")) // BYTES_PER_TOKEN)


def count_prompt_tokens(text: str) -> int:
    """Tokens a completion prompt costs; at least one."""
    return max(1, count_text_tokens(text))


def count_chat_tokens(message_contents: Iterable[str]) -> int:
    """Tokens a chat prompt costs: each message's text plus the template overhead; at least one."""
    total = REPLY_PRIMER_TOKENS
    for content in message_contents:
        total += MESSAGE_TEMPLATE_TOKENS + count_text_tokens(content)
    return max(1, total)


def prompt_digest(text: str) -> int:
    """A stable 64-bit digest of a prompt; the same text gives the same digest in every process."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")


def _mix(*values: int) -> int:
    """Fold integers into one well-spread 64-bit value (splitmix64 finaliser per step)."""
    state = 0x9E3779B97F4A7C15
    for value in values:
        state = (state ^ (value & _MASK64)) & _MASK64
        state = ((state ^ (state >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        state = ((state ^ (state >> 27)) * 0x94D049BB133111EB) & _MASK64
        state ^= state >> 31
    return state


def natural_output_tokens(seed: int, digest: int) -> int:
    """How many tokens the pretend model says before end-of-sequence, in [8, 256]."""
    span = MAX_NATURAL_TOKENS - MIN_NATURAL_TOKENS + 1
    return MIN_NATURAL_TOKENS + _mix(seed, digest, 0xE05) % span


def token_text(seed: int, digest: int, index: int) -> str:
    """Token ``index`` of the reply to prompt ``digest``; all but the first lead with a space."""
    word = _WORDS[_mix(seed, digest, index) % len(_WORDS)]
    return word if index == 0 else " " + word


def reply_text(seed: int, digest: int, start: int, stop: int) -> str:
    """The text of tokens ``start`` up to (not including) ``stop`` of a reply."""
    return "".join(token_text(seed, digest, index) for index in range(start, stop))
