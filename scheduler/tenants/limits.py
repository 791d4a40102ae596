"""Per-key rate limits: a requests-per-minute and a tokens-per-minute token bucket.

Pure: the caller passes ``now`` (monotonic seconds). A bucket holds up to its per-minute limit
and refills continuously at limit/60 per second. A request takes one request and its token
estimate (prompt + max_tokens) from both buckets, or from neither when either is short.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

_MINUTE_S = 60.0


@dataclass(slots=True)
class TokenBucket:
    """Invariant: ``0 <= level <= capacity``."""

    capacity: float
    level: float
    updated: float

    @property
    def refill_per_s(self) -> float:
        return self.capacity / _MINUTE_S

    def advance(self, now: float) -> None:
        elapsed = max(0.0, now - self.updated)
        self.level = min(self.capacity, self.level + elapsed * self.refill_per_s)
        self.updated = max(self.updated, now)

    def wait_s(self, amount: float) -> float:
        """Seconds until ``amount`` is available; a minute when it never fits (> capacity)."""
        if amount > self.capacity:
            return _MINUTE_S
        if amount <= self.level:
            return 0.0
        return (amount - self.level) / self.refill_per_s

    def reset_s(self) -> float:
        """Seconds until the bucket is full again."""
        return (self.capacity - self.level) / self.refill_per_s

    def state(self) -> LimitState:
        return LimitState(int(self.capacity), math.floor(self.level), self.reset_s())


@dataclass(frozen=True, slots=True)
class LimitState:
    """What the ``x-ratelimit-*`` headers of one bucket say after this request."""

    limit: int
    remaining: int
    reset_s: float


@dataclass(frozen=True, slots=True)
class RateDecision:
    """``requests``/``tokens`` are None for an unlimited dimension. ``reason`` says why not."""

    allowed: bool
    requests: LimitState | None
    tokens: LimitState | None
    retry_after_s: float = 0.0
    reason: str = ""


class RateLimiter:
    """Token buckets per key id, created full on a key's first request."""

    def __init__(self) -> None:
        self._buckets: dict[tuple[str, str], TokenBucket] = {}

    def check(
        self, key_id: str, *, rpm: int | None, tpm: int | None, tokens: int, now: float
    ) -> RateDecision:
        """Take one request and ``tokens`` for ``key_id`` if both fit, else take nothing."""
        requests = self._bucket(key_id, "requests", rpm, now)
        token_bucket = self._bucket(key_id, "tokens", tpm, now)
        wanted = ((requests, 1, "requests"), (token_bucket, tokens, "tokens"))
        waits = [
            (bucket.wait_s(amount), name, amount, bucket)
            for bucket, amount, name in wanted
            if bucket is not None
        ]
        refusals = [wait for wait in waits if wait[0] > 0]
        if refusals:
            wait_s, name, amount, bucket = max(refusals, key=lambda wait: wait[0])
            if amount > bucket.capacity:
                reason = (
                    f"This request needs {amount} tokens (prompt + max_tokens), more than the "
                    f"key's limit of {int(bucket.capacity)} tokens per minute; lower max_tokens."
                )
            else:
                reason = (
                    f"Rate limit reached: {int(bucket.capacity)} {name} per minute for this key. "
                    f"Retry in {wait_s:.1f} s."
                )
            return RateDecision(False, _state(requests), _state(token_bucket), wait_s, reason)
        for taken, amount in ((requests, 1), (token_bucket, tokens)):
            if taken is not None:
                taken.level -= amount
        return RateDecision(True, _state(requests), _state(token_bucket))

    def _bucket(self, key_id: str, name: str, limit: int | None, now: float) -> TokenBucket | None:
        if limit is None:
            self._buckets.pop((key_id, name), None)
            return None
        bucket = self._buckets.get((key_id, name))
        if bucket is None or bucket.capacity != limit:
            bucket = self._buckets[(key_id, name)] = TokenBucket(float(limit), float(limit), now)
        bucket.advance(now)
        return bucket

    def forget(self, key_id: str) -> None:
        """Drop a key's buckets (it was revoked or removed)."""
        for name in ("requests", "tokens"):
            self._buckets.pop((key_id, name), None)


def _state(bucket: TokenBucket | None) -> LimitState | None:
    return None if bucket is None else bucket.state()
