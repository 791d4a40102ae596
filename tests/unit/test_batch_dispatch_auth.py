"""The batch dispatcher's credential (``dispatch_credentials``) and how the gateway honours it
(``GatewayAuth``): only with the token serve started it with, acting as the batch's key (its
tenant, classes, limits, revocation); a batch made while auth was off runs without a key; an
ordinary key still works beside it, and the credential means nothing where no token is set."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler.batches.dispatch_credentials import (
    PREFIX,
    credential,
    new_token,
    parse_credential,
)
from scheduler.config import AuthConfig
from scheduler.errors import RateLimited, Unauthenticated
from scheduler.gateway.auth import GatewayAuth
from scheduler.tenants import KeyFile, parse_key
from scheduler.types import ServiceTier, TrafficClass


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def keys(tmp_path: Path) -> KeyFile:
    return KeyFile(tmp_path / "keys.json")


def issue(keys: KeyFile, tenant: str = "acme") -> str:
    return keys.create(
        tenant=tenant,
        classes=frozenset({TrafficClass.STANDARD, TrafficClass.BATCH}),
        default_class=TrafficClass.STANDARD,
        rpm=2,
        tpm=None,
    ).plaintext


def key_id(plaintext: str) -> str:
    parsed = parse_key(plaintext)
    assert parsed is not None
    return parsed[0]


def bearer(value: str) -> str:
    return f"Bearer {value}"


def test_the_credential_round_trips_and_nothing_else_parses() -> None:
    token = new_token()
    assert len(token) == 64 and token != new_token()
    assert parse_credential(credential(token, None)) == (token, None)
    assert parse_credential(credential(token, "0123456789ab")) == (token, "0123456789ab")
    for other in (
        "",
        "gs-0123456789ab-" + "0" * 48,  # an ordinary API key
        PREFIX + token[:-1],
        PREFIX + token + ".",
        PREFIX + token + ".0123456789AB",
        PREFIX + token + ".0123456789ab.x",
        PREFIX + token.upper(),
    ):
        assert parse_credential(other) is None, other


def test_the_dispatcher_acts_as_the_batch_key(keys: KeyFile) -> None:
    plaintext, token, clock = issue(keys), new_token(), Clock()
    auth = GatewayAuth.from_config(
        AuthConfig(keys_file=str(keys.path)), clock=clock, dispatcher_token=token
    )
    caller = auth.authenticate(bearer(credential(token, key_id(plaintext))))
    assert caller.key is not None and caller.key.tenant == "acme"
    assert auth.admit(caller, ServiceTier.FLEX, 10) is TrafficClass.BATCH
    assert auth.admit(caller, ServiceTier.PRIORITY, 10) is TrafficClass.STANDARD  # key's policy
    assert caller.headers["x-gearshift-tier-downgraded"] == "priority->default"
    own = auth.authenticate(bearer(plaintext))  # the key itself still works, same limits
    assert own.key == caller.key
    with pytest.raises(RateLimited):
        auth.admit(own, ServiceTier.FLEX, 10)  # rpm 2: the dispatcher's two used it up


def test_a_wrong_token_or_a_revoked_key_is_refused(keys: KeyFile) -> None:
    plaintext, token, clock = issue(keys), new_token(), Clock()
    auth = GatewayAuth.from_config(
        AuthConfig(keys_file=str(keys.path)), clock=clock, dispatcher_token=token
    )
    with pytest.raises(Unauthenticated):
        auth.authenticate(bearer(credential(new_token(), key_id(plaintext))))
    with pytest.raises(Unauthenticated):
        auth.authenticate(bearer(credential(token, "0123456789ab")))  # no such key
    keys.revoke(key_id(plaintext))
    clock.now += 2  # the gateway re-reads the key file
    with pytest.raises(Unauthenticated, match="revoked"):
        auth.authenticate(bearer(credential(token, key_id(plaintext))))


def test_a_batch_made_without_a_key_runs_without_one(keys: KeyFile) -> None:
    issue(keys)
    token = new_token()
    auth = GatewayAuth.from_config(AuthConfig(keys_file=str(keys.path)), dispatcher_token=token)
    caller = auth.authenticate(bearer(credential(token, None)))
    assert caller.key is None
    assert auth.admit(caller, ServiceTier.FLEX, 10) is TrafficClass.BATCH


def test_without_a_dispatcher_token_the_credential_is_just_a_bad_key(keys: KeyFile) -> None:
    plaintext = issue(keys)
    auth = GatewayAuth.from_config(AuthConfig(keys_file=str(keys.path)))
    with pytest.raises(Unauthenticated):
        auth.authenticate(bearer(credential(new_token(), key_id(plaintext))))


def test_with_auth_off_no_credential_is_needed(tmp_path: Path) -> None:
    token = new_token()
    auth = GatewayAuth.from_config(
        AuthConfig(keys_file=str(tmp_path / "none.json")), dispatcher_token=token
    )
    assert not auth.enabled
    assert auth.authenticate(bearer(credential(token, None))).key is None
    assert auth.authenticate(None).key is None
