"""API keys: the ``gs-<id>-<secret>`` format, the stored record, salted hashing, verification.

A key's id is short and not secret (it names the key in logs, metrics and ``gearshift keys
ls``); the secret is 192 random bits and is never stored: the record holds a PBKDF2-SHA256
hash of it with a per-key random salt. Verification compares digests in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, replace
from datetime import datetime

from scheduler.types import TrafficClass

OPEN_TENANT = "_open"
"""The tenant of every caller while authentication is off: it owns their files and batches
and takes one turn in the fair queues. A key's tenant name cannot start with ``_``
(``gearshift keys create``), so no key ever sees what it owns."""

KEY_PREFIX = "gs"
DEFAULT_ITERATIONS = 10_000
"""PBKDF2 rounds for a new key (about 4 ms). The secret is 192 random bits, not a password, so
the rounds are a margin, not the defence; kept low because a wrong secret for a real id costs
one full hash on the gateway's event loop. Verified keys are cached, so a caller pays it once."""

_ID = re.compile(r"^[0-9a-f]{12}$")
_SECRET = re.compile(r"^[0-9a-f]{48}$")


@dataclass(frozen=True, slots=True)
class ApiKey:
    """One key as stored: everything but the secret. ``classes`` is never empty and holds
    ``default_class``; ``rpm``/``tpm`` of None mean unlimited."""

    key_id: str
    tenant: str
    classes: frozenset[TrafficClass]
    default_class: TrafficClass
    rpm: int | None
    tpm: int | None
    created_at: datetime
    revoked: bool
    salt: bytes
    digest: bytes
    iterations: int

    def verify(self, secret: str) -> bool:
        """Whether ``secret`` is this key's secret (constant time in the secret's content)."""
        return hmac.compare_digest(_hash(secret, self.salt, self.iterations), self.digest)

    def revoke(self) -> ApiKey:
        return replace(self, revoked=True)


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A new key: the record to store and the plaintext, shown to the operator once."""

    record: ApiKey
    plaintext: str


def issue_key(
    *,
    key_id: str,
    tenant: str,
    classes: frozenset[TrafficClass],
    default_class: TrafficClass,
    rpm: int | None,
    tpm: int | None,
    created_at: datetime,
    iterations: int = DEFAULT_ITERATIONS,
) -> IssuedKey:
    """A fresh secret for ``key_id`` and the record that verifies it (ids come from the store,
    which knows which are taken)."""
    if not _ID.match(key_id):
        raise ValueError(f"key id {key_id!r} is not 12 lowercase hex digits")
    secret = secrets.token_hex(24)
    salt = secrets.token_bytes(16)
    record = ApiKey(
        key_id=key_id,
        tenant=tenant,
        classes=classes,
        default_class=default_class,
        rpm=rpm,
        tpm=tpm,
        created_at=created_at,
        revoked=False,
        salt=salt,
        digest=_hash(secret, salt, iterations),
        iterations=iterations,
    )
    return IssuedKey(record, f"{KEY_PREFIX}-{key_id}-{secret}")


def new_key_id() -> str:
    return secrets.token_hex(6)


def parse_key(presented: str) -> tuple[str, str] | None:
    """``(key_id, secret)`` of a well-formed key, else None."""
    prefix, _, rest = presented.partition("-")
    key_id, _, secret = rest.partition("-")
    if prefix != KEY_PREFIX or not _ID.match(key_id) or not _SECRET.match(secret):
        return None
    return key_id, secret


def _hash(secret: str, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", secret.encode(), salt, iterations)
