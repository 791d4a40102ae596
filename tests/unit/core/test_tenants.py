"""Tenants: the key file holds salted hashes only, the class policy only ever downgrades, and
the per-key token buckets refill at limit/60 per second (fake clock)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from scheduler.tenants import KeyFile, RateLimiter, ReloadingKeyStore, parse_key, resolve_class
from scheduler.tenants.limits import TokenBucket
from scheduler.types import TrafficClass

INT, S, B = TrafficClass.INTERACTIVE, TrafficClass.STANDARD, TrafficClass.BATCH
EVERY = frozenset(TrafficClass)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _create(keys: KeyFile, tenant: str = "acme", **limits: int | None) -> str:
    issued = keys.create(
        tenant=tenant,
        classes=frozenset({S, B}),
        default_class=S,
        rpm=limits.get("rpm"),
        tpm=limits.get("tpm"),
    )
    return issued.plaintext


def test_the_key_file_holds_hashes_with_distinct_salts_and_mode_0600(tmp_path: Path) -> None:
    keys = KeyFile(tmp_path / "sub" / "keys.json")
    plaintexts = [_create(keys, f"t{i}") for i in range(3)]
    text = keys.path.read_text()
    for plaintext in plaintexts:
        key_id, secret = parse_key(plaintext) or ("", "")
        assert key_id in text
        assert secret not in text and plaintext not in text
    records = list(keys.load().keys.values())
    assert len({r.salt for r in records}) == 3
    assert len({r.digest for r in records}) == 3
    assert keys.path.stat().st_mode & 0o777 == 0o600
    assert keys.path.parent.stat().st_mode & 0o777 == 0o700
    assert [p.name for p in keys.path.parent.iterdir()] == ["keys.json"], "no temporary left"


@pytest.mark.parametrize(
    "presented",
    ["", "gs", "gs-abc-def", "sk-123", "gs-ABCDEF012345-" + "0" * 48, "gs-0123456789ab-xyz"],
)
def test_malformed_keys_do_not_parse(presented: str) -> None:
    assert parse_key(presented) is None


def test_verify_accepts_only_the_issued_secret_and_revocation_sticks(tmp_path: Path) -> None:
    keys = KeyFile(tmp_path / "keys.json")
    plaintext = _create(keys)
    key_id, secret = parse_key(plaintext) or ("", "")
    record = keys.load().keys[key_id]
    assert record.verify(secret)
    assert not record.verify(secret[:-1] + ("0" if secret[-1] != "0" else "1"))
    store = ReloadingKeyStore(keys.path, clock=FakeClock())
    assert store.authenticate(plaintext) == record
    assert store.authenticate(plaintext) == record, "cached verification"
    assert store.authenticate(plaintext[:-1] + "x") is None
    assert store.authenticate(f"gs-{'0' * 12}-{secret}") is None, "unknown id"
    keys.revoke(key_id)
    assert keys.load().keys[key_id].revoked
    assert ReloadingKeyStore(keys.path, clock=FakeClock()).authenticate(plaintext) is None
    with pytest.raises(KeyError):
        keys.revoke("0" * 12)


def test_the_store_rereads_a_changed_file_at_most_once_per_interval(tmp_path: Path) -> None:
    keys = KeyFile(tmp_path / "keys.json")
    plaintext = _create(keys)
    key_id = (parse_key(plaintext) or ("", ""))[0]
    clock = FakeClock()
    store = ReloadingKeyStore(keys.path, clock=clock, interval_s=1.0)
    assert store.authenticate(plaintext) is not None
    keys.revoke(key_id)
    clock.now += 0.5
    assert store.authenticate(plaintext) is not None, "not looked at again within the interval"
    clock.now += 0.6
    assert store.authenticate(plaintext) is None, "revocation seen after the interval"
    later = _create(keys, "late")
    clock.now += 1.0
    assert store.authenticate(later) is not None, "a new key is picked up too"


def test_a_broken_file_keeps_the_last_keys_and_a_missing_one_refuses_all(
    tmp_path: Path,
) -> None:
    keys = KeyFile(tmp_path / "keys.json")
    plaintext = _create(keys)
    clock = FakeClock()
    store = ReloadingKeyStore(keys.path, clock=clock)
    keys.path.write_text("{not json")
    clock.now += 2
    assert store.authenticate(plaintext) is not None
    os.unlink(keys.path)
    clock.now += 2
    assert store.authenticate(plaintext) is None


@pytest.mark.parametrize(
    ("allowed", "default", "requested", "used"),
    [
        # requested class allowed: used as is
        (EVERY, S, INT, INT),
        (EVERY, S, B, B),
        (EVERY, B, None, B),
        # downgraded to the best allowed class below
        (frozenset({S, B}), S, INT, S),
        (frozenset({B}), B, INT, B),
        (frozenset({B}), B, S, B),
        (frozenset({INT, B}), INT, S, B),
        # never upgraded: nothing at or below the request
        (frozenset({INT}), INT, S, None),
        (frozenset({INT, S}), S, B, None),
        # no request: the default class
        (frozenset({S, B}), S, None, S),
        (frozenset({INT}), INT, None, INT),
    ],
)
def test_class_policy_downgrades_and_never_upgrades(
    allowed: frozenset[TrafficClass],
    default: TrafficClass,
    requested: TrafficClass | None,
    used: TrafficClass | None,
) -> None:
    decision = resolve_class(requested, allowed, default)
    assert decision.used is used
    assert decision.requested is (requested or default)
    assert decision.downgraded == (used is not None and used is not decision.requested)


def test_no_class_is_ever_better_than_the_request() -> None:
    rank = [INT, S, B]
    for mask in range(1, 8):
        allowed = frozenset(c for i, c in enumerate(rank) if mask >> i & 1)
        default = next(c for c in rank if c in allowed)
        for requested in rank:
            used = resolve_class(requested, allowed, default).used
            assert used is None or rank.index(used) >= rank.index(requested)


def test_token_bucket_refills_at_limit_per_minute() -> None:
    bucket = TokenBucket(capacity=60.0, level=0.0, updated=0.0)
    bucket.advance(10.0)
    assert bucket.level == pytest.approx(10.0)
    assert bucket.wait_s(15) == pytest.approx(5.0)
    assert bucket.reset_s() == pytest.approx(50.0)
    bucket.advance(5.0)  # a clock that goes back changes nothing
    assert bucket.level == pytest.approx(10.0)
    bucket.advance(1000.0)
    assert bucket.level == 60.0
    assert bucket.wait_s(60) == 0.0
    assert bucket.wait_s(61) == 60.0, "more than the bucket holds never fits"


def test_rpm_limit_refuses_the_extra_request_until_refill() -> None:
    limiter = RateLimiter()
    allowed = [limiter.check("k", rpm=3, tpm=None, tokens=10, now=0.0) for _ in range(3)]
    assert all(d.allowed for d in allowed)
    assert [d.requests.remaining for d in allowed if d.requests] == [2, 1, 0]
    assert all(d.tokens is None for d in allowed)
    refused = limiter.check("k", rpm=3, tpm=None, tokens=10, now=1.0)
    assert not refused.allowed
    assert refused.retry_after_s == pytest.approx(19.0)  # 1 request at 3/60 per s, 1 s elapsed
    assert refused.requests is not None and refused.requests.remaining == 0
    assert "3 requests per minute" in refused.reason
    assert limiter.check("k", rpm=3, tpm=None, tokens=10, now=20.0).allowed
    assert limiter.check("other", rpm=3, tpm=None, tokens=10, now=1.0).allowed, "per key"


def test_tpm_limit_takes_both_buckets_or_neither() -> None:
    limiter = RateLimiter()
    first = limiter.check("k", rpm=10, tpm=100, tokens=80, now=0.0)
    assert first.allowed and first.tokens is not None and first.requests is not None
    assert (first.tokens.limit, first.tokens.remaining) == (100, 20)
    assert first.tokens.reset_s == pytest.approx(48.0)
    refused = limiter.check("k", rpm=10, tpm=100, tokens=50, now=0.0)
    assert not refused.allowed
    assert refused.retry_after_s == pytest.approx(18.0)  # 30 tokens at 100/60 per s
    assert refused.requests is not None and refused.requests.remaining == 9, "nothing taken"
    too_big = limiter.check("k", rpm=10, tpm=100, tokens=500, now=0.0)
    assert not too_big.allowed and "lower max_tokens" in too_big.reason
    fresh = limiter.check("new", rpm=10, tpm=100, tokens=101, now=0.0)
    assert not fresh.allowed and fresh.tokens is not None and fresh.tokens.remaining == 100


def test_unlimited_keys_have_no_buckets() -> None:
    decision = RateLimiter().check("k", rpm=None, tpm=None, tokens=10**9, now=0.0)
    assert decision.allowed and decision.requests is None and decision.tokens is None
