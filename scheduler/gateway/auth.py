"""Who is calling the public endpoint: bearer API keys, the key's class policy, its limits.

``authenticate`` runs first on every /v1 route (before the body is read), ``admit`` once the
request is parsed. With authentication off (``GatewayAuth.open()``) everyone is admitted in
the class their ``service_tier`` names, with no limits and no extra headers. Logs name a key
by its id, never by the key. The batch dispatcher that ``gearshift serve`` starts presents an
internal token and the id of the key a batch was made with, and is admitted as that key
(``scheduler.batches.dispatch_credentials``).
"""

from __future__ import annotations

import hmac
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from scheduler.batches.dispatch_credentials import parse_credential
from scheduler.config import AuthConfig
from scheduler.errors import PermissionDenied, RateLimited, Unauthenticated
from scheduler.gateway.classify import classify
from scheduler.tenants import (
    OPEN_TENANT,
    ApiKey,
    LimitState,
    RateDecision,
    RateLimiter,
    resolve_class,
)
from scheduler.tenants.keys import parse_key
from scheduler.tenants.store import ReloadingKeyStore, keys_path
from scheduler.types import TIER_FOR_CLASS, ServiceTier, TrafficClass

log = logging.getLogger(__name__)

DOWNGRADE_HEADER = "x-gearshift-tier-downgraded"


@dataclass(slots=True)
class Caller:
    """One request's key (None with auth off) and the headers its response must carry."""

    key: ApiKey | None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def tenant(self) -> str:
        """The key's tenant; everyone shares ``OPEN_TENANT`` with authentication off."""
        return self.key.tenant if self.key is not None else OPEN_TENANT


def auth_required(auth: AuthConfig) -> bool:
    """Keys are required when auth is enabled and the key file exists."""
    return auth.enabled and keys_path(auth).exists()


class GatewayAuth:
    """Authentication, class policy and rate limits for the public endpoint."""

    def __init__(
        self,
        store: ReloadingKeyStore | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        dispatcher_token: str | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._limiter = RateLimiter()
        self._dispatcher_token = dispatcher_token

    @classmethod
    def open(cls) -> GatewayAuth:
        """No authentication: every caller may use every class."""
        return cls(None)

    @classmethod
    def from_config(
        cls,
        auth: AuthConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        dispatcher_token: str | None = None,
    ) -> GatewayAuth:
        """``dispatcher_token``: the batch dispatcher's internal token (None: no dispatcher)."""
        if not auth_required(auth):
            return cls.open()
        store = ReloadingKeyStore(keys_path(auth), clock=clock, interval_s=auth.reload_interval_s)
        return cls(store, clock=clock, dispatcher_token=dispatcher_token)

    @property
    def enabled(self) -> bool:
        return self._store is not None

    def authenticate(self, authorization: str | None) -> Caller:
        """The caller a ``Authorization`` header names; ``Unauthenticated`` when it names none."""
        if self._store is None:
            return Caller(None)
        scheme, _, presented = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            raise Unauthenticated(
                "Missing API key: send `Authorization: Bearer <key>` (create one with "
                "`gearshift keys create`)."
            )
        acting = parse_credential(presented.strip())
        if acting is not None and self._dispatcher_token is not None:
            return self._dispatcher(*acting)
        key = self._store.authenticate(presented.strip())
        if key is None:
            parsed = parse_key(presented.strip())
            log.debug("refused key id %s", parsed[0] if parsed else "(malformed)")
            raise Unauthenticated("Incorrect, unknown or revoked API key.")
        return Caller(key)

    def _dispatcher(self, token: str, key_id: str | None) -> Caller:
        """The batch dispatcher acting for the key a batch was made with (none: the batch was
        made while authentication was off, and runs as it was accepted then)."""
        assert self._store is not None and self._dispatcher_token is not None
        if not hmac.compare_digest(token.encode(), self._dispatcher_token.encode()):
            raise Unauthenticated("Incorrect, unknown or revoked API key.")
        if key_id is None:
            return Caller(None)
        key = self._store.live_key(key_id)
        if key is None:
            log.debug("batch line for revoked key id %s refused", key_id)
            raise Unauthenticated("The API key this batch was created with is revoked.")
        return Caller(key)

    def admit(self, caller: Caller, tier: ServiceTier, tokens: int) -> TrafficClass:
        """The class the request runs in, after the key's class policy and rate limits.

        Sets the rate-limit and downgrade headers on ``caller``; raises ``PermissionDenied``
        (no class at or below the asked one) or ``RateLimited``.
        """
        key = caller.key
        if key is None:
            return classify(tier)
        requested = None if tier is ServiceTier.AUTO else classify(tier)
        decision = resolve_class(requested, key.classes, key.default_class)
        if decision.used is None:
            raise PermissionDenied(
                f"This key may not use service_tier `{tier.value}` or any tier below it.",
                param="service_tier",
                code="tier_not_allowed",
            )
        if decision.downgraded:
            asked, used = TIER_FOR_CLASS[decision.requested], TIER_FOR_CLASS[decision.used]
            caller.headers[DOWNGRADE_HEADER] = f"{asked.value}->{used.value}"
        rate = self._limiter.check(
            key.key_id, rpm=key.rpm, tpm=key.tpm, tokens=tokens, now=self._clock()
        )
        caller.headers.update(rate_limit_headers(rate))
        if not rate.allowed:
            log.debug("key %s rate limited: %s", key.key_id, rate.reason)
            raise RateLimited(rate.reason, retry_after_s=rate.retry_after_s)
        return decision.used


def rate_limit_headers(decision: RateDecision) -> dict[str, str]:
    """OpenAI's ``x-ratelimit-*`` headers for the limited dimensions of ``decision``."""
    headers: dict[str, str] = {}
    for name, state in (("requests", decision.requests), ("tokens", decision.tokens)):
        if state is not None:
            headers.update(_headers(name, state))
    return headers


def _headers(name: str, state: LimitState) -> dict[str, str]:
    return {
        f"x-ratelimit-limit-{name}": str(state.limit),
        f"x-ratelimit-remaining-{name}": str(state.remaining),
        f"x-ratelimit-reset-{name}": duration(state.reset_s),
    }


def duration(seconds: float) -> str:
    """A reset time as OpenAI writes it: ``0s``, ``250ms``, ``6s``, ``1m0s``."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    minutes, secs = divmod(math.ceil(seconds), 60)
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"
