"""Tenants and API keys: who is calling, which classes they may use, and how fast.

Pure where it can be: ``keys`` (format, hashing), ``policy`` (class downgrade) and ``limits``
(token buckets, ``now`` passed in) do no I/O; ``store`` reads and writes the JSON key file.
Nothing here knows about HTTP.
"""

from __future__ import annotations

from scheduler.tenants.keys import OPEN_TENANT, ApiKey, IssuedKey, issue_key, parse_key
from scheduler.tenants.limits import LimitState, RateDecision, RateLimiter
from scheduler.tenants.policy import ClassDecision, resolve_class
from scheduler.tenants.store import (
    KeyFile,
    KeyStore,
    ReloadingKeyStore,
    default_keys_path,
    keys_path,
)

__all__ = [
    "OPEN_TENANT",
    "ApiKey",
    "ClassDecision",
    "IssuedKey",
    "KeyFile",
    "KeyStore",
    "LimitState",
    "RateDecision",
    "RateLimiter",
    "ReloadingKeyStore",
    "default_keys_path",
    "issue_key",
    "keys_path",
    "parse_key",
    "resolve_class",
]
