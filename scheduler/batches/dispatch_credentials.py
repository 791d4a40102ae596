"""How the batch dispatcher authenticates to its own gateway: an internal token that ``gearshift
serve`` generates at start, plus the id of the API key the batch was created with.

The bearer is ``gs-dispatch-<token>`` (a batch created while authentication was off) or
``gs-dispatch-<token>.<key id>``. The gateway honours it only when the token is the one it was
started with (``scheduler.gateway.auth``) and then acts as that key: the key's class policy,
rate limits and revocation apply to the batch's lines as to the key's own requests. No client
holds the token: serve hands it to its dispatcher child in the environment (``TOKEN_ENV``),
never on a command line. Pure: text in, text out.
"""

from __future__ import annotations

import re
import secrets

PREFIX = "gs-dispatch-"
TOKEN_ENV = "GEARSHIFT_DISPATCHER_TOKEN"
"""Where the dispatcher process finds the token."""

_CREDENTIAL = re.compile(r"^gs-dispatch-([0-9a-f]{64})(?:\.([0-9a-f]{12}))?$")


def new_token() -> str:
    """256 random bits, hex."""
    return secrets.token_hex(32)


def credential(token: str, key_id: str | None) -> str:
    """The bearer the dispatcher presents to run a line of a batch made with ``key_id``."""
    return PREFIX + token + ("" if key_id is None else f".{key_id}")


def parse_credential(presented: str) -> tuple[str, str | None] | None:
    """``(token, key id or None)`` when ``presented`` has the dispatcher's form, else None (an
    ordinary API key, or garbage)."""
    match = _CREDENTIAL.match(presented)
    if match is None:
        return None
    return match[1], match[2]
