"""The sim engine's stand-in tokens: counting rules, reply lengths and text are deterministic."""

from __future__ import annotations

from nodes.engines.sim import text


def test_prompt_tokens_are_four_bytes_each_rounded_up() -> None:
    assert [text.count_prompt_tokens(s) for s in ("", "a", "abcd", "abcde", "é" * 4)] == [
        1, 1, 1, 2, 2,
    ]


def test_chat_prompts_pay_for_the_template() -> None:
    # 3 per message + 3 for the reply primer + the text.
    assert text.count_chat_tokens(["abcd"]) == 3 + 3 + 1
    assert text.count_chat_tokens(["abcd", "abcdefgh"]) == 3 + 2 * 3 + 1 + 2


def test_natural_lengths_are_deterministic_and_in_range() -> None:
    digests = [text.prompt_digest(f"prompt {i}") for i in range(500)]
    lengths = [text.natural_output_tokens(0, d) for d in digests]
    assert lengths == [text.natural_output_tokens(0, d) for d in digests]
    assert min(lengths) >= text.MIN_NATURAL_TOKENS and max(lengths) <= text.MAX_NATURAL_TOKENS
    assert len(set(lengths)) > 100  # spread, not constant
    assert lengths != [text.natural_output_tokens(1, d) for d in digests]  # the seed matters


def test_token_text_depends_only_on_seed_prompt_and_index() -> None:
    digest = text.prompt_digest("hello")
    whole = text.reply_text(0, digest, 0, 20)
    assert whole == text.reply_text(0, digest, 0, 10) + text.reply_text(0, digest, 10, 20)
    assert whole != text.reply_text(0, text.prompt_digest("hello!"), 0, 20)
    assert not whole.startswith(" ") and len(whole.split()) == 20
