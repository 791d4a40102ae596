"""What a simulated replica's steps cost: the performance model's answers, remembered, and the
token budget a vLLM engine gives one step (``engine_token_budget``).

The live sim engine (``nodes.engines.sim``) uses the same rule and the same chunk prices.
"""

from __future__ import annotations

from typing import Protocol

from nodes.accelerators import AcceleratorKind, AcceleratorSpec


class StepTimeModel(Protocol):
    """What a replica needs from the performance model (``ReplicaPerformance`` provides it)."""

    @property
    def kv_capacity_tokens(self) -> int: ...

    def prefill_seconds(self, prompt_tokens: int) -> float: ...

    def decode_step_seconds(self, batch_size: int, mean_context_tokens: int) -> float: ...


MAX_NUM_BATCHED_TOKENS = 2048
"""vLLM's token budget per step for its OpenAI server on most cards (``engine_token_budget``)."""
LARGE_CARD_BATCHED_TOKENS = 8192
"""vLLM's budget on GPUs of at least ``LARGE_CARD_MEMORY_GIB`` other than the A100."""
LARGE_CARD_MEMORY_GIB = 70.0


def engine_token_budget(accelerator: AcceleratorSpec) -> int:
    """vLLM's default ``max_num_batched_tokens`` for its OpenAI server on ``accelerator``:
    8,192 on GPUs of at least 70 GiB other than the A100 (whose throughput a larger budget
    lowered, vLLM PR #17885), 2,048 elsewhere [V vLLM ``EngineArgs.get_batch_defaults``].
    Gearshift launches vLLM without ``--max-num-batched-tokens``, so its engines run this."""
    large = (
        accelerator.kind is AcceleratorKind.GPU
        and accelerator.memory_gib >= LARGE_CARD_MEMORY_GIB
        and "a100" not in accelerator.name.lower()
    )
    return LARGE_CARD_BATCHED_TOKENS if large else MAX_NUM_BATCHED_TOKENS


_CONTEXT_SHIFT = 16
"""Step-time cache keys: mean context above this many bits, batch size (< 65,536) below."""


class CachedStepTimes:
    """A ``StepTimeModel`` that remembers every answer of the one it wraps (same numbers: a
    decode step time depends only on the batch size and mean context)."""

    def __init__(self, model: StepTimeModel) -> None:
        self._model = model
        self.kv_capacity_tokens = model.kv_capacity_tokens
        self._prefill: dict[int, float] = {}
        self._decode: dict[int, float] = {}

    def prefill_seconds(self, prompt_tokens: int) -> float:
        seconds = self._prefill.get(prompt_tokens)
        if seconds is None:
            seconds = self._prefill[prompt_tokens] = self._model.prefill_seconds(prompt_tokens)
        return seconds

    def prefill_chunk_seconds(self, done: int, chunk: int) -> float:
        """What ``chunk`` more tokens add to a prefill that has ``done`` tokens: their GEMMs and
        their attention over the prefix (the first chunk pays the pass overheads too), so the
        chunks of a prompt add up to its ``prefill_seconds`` however it is cut."""
        seconds = self.prefill_seconds(done + chunk)
        return seconds - self.prefill_seconds(done) if done else seconds

    def decode_step_seconds(self, batch_size: int, mean_context_tokens: int) -> float:
        key = (mean_context_tokens << _CONTEXT_SHIFT) | batch_size
        seconds = self._decode.get(key)
        if seconds is None:
            seconds = self._model.decode_step_seconds(batch_size, mean_context_tokens)
            self._decode[key] = seconds
        return seconds

    def decode_ends(
        self, batch_size: int, mean_context_tokens: int, count: int, start: float
    ) -> list[float]:
        """End times of ``count`` decode steps from ``start``, the mean context growing by one
        token a step (as ``decode_step_seconds`` step after step, summed in order)."""
        cache, model = self._decode, self._model
        key = (mean_context_tokens << _CONTEXT_SHIFT) | batch_size
        ends: list[float] = []
        end = start
        for _ in range(count):
            seconds = cache.get(key)
            if seconds is None:
                seconds = model.decode_step_seconds(batch_size, key >> _CONTEXT_SHIFT)
                cache[key] = seconds
            end = end + seconds
            ends.append(end)
            key += 1 << _CONTEXT_SHIFT
        return ends
