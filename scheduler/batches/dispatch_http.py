"""The dispatcher's HTTP edge: one batch line as a request to the gateway's own public endpoint.

The line's body goes to its ``url`` (``/v1/chat/completions``, ...) on the gateway with
``stream: false`` and the ``service_tier`` the pacing chose (``flex``: class batch), so the
gateway's authentication, admission queues, routing and priorities apply to it as to any
client's request. With a dispatcher token the request carries the dispatcher's credential for
the batch's key (``dispatch_credentials``). Network trouble is an ``Answer``, never an
exception.
"""

from __future__ import annotations

import json
import math
from typing import Any

import aiohttp

from scheduler.batches.dispatch import Answer
from scheduler.batches.dispatch_credentials import credential
from scheduler.batches.objects import LeasedLine
from scheduler.types import ServiceTier

ERROR_BODY_CHARS = 2000
"""Most characters of a non-JSON error body kept in the line's error record."""


class GatewaySender:
    """``LineSender`` over an aiohttp session to ``base_url`` (``http://127.0.0.1:8000``)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        *,
        token: str | None,
        timeout_s: float,
    ) -> None:
        self._session = session
        self._base_url = base_url.rstrip("/")
        self._token = token
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def send(self, line: LeasedLine, tier: ServiceTier) -> Answer:
        body = {**line.body, "service_tier": tier.value, "stream": False}
        headers = {"Content-Type": "application/json"}
        if self._token is not None:
            headers["Authorization"] = f"Bearer {credential(self._token, line.key_id)}"
        try:
            async with self._session.post(
                self._base_url + line.endpoint,
                data=json.dumps(body, separators=(",", ":")),
                headers=headers,
                timeout=self._timeout,
            ) as response:
                raw = await response.read()
                return Answer(
                    status=response.status,
                    body=_json(raw, response.status),
                    request_id=response.headers.get("x-request-id", ""),
                    accelerator=response.headers.get("x-gearshift-accelerator"),
                    retry_after_s=_seconds(response.headers.get("retry-after")),
                )
        except TimeoutError:
            return Answer(None, timed_out=True, detail="no answer in time")
        except aiohttp.ClientError as exc:
            return Answer(None, detail=f"{type(exc).__name__}: {exc}")


def _json(raw: bytes, status: int) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        text = raw.decode("utf-8", errors="replace")[:ERROR_BODY_CHARS]
        return {
            "error": {
                "message": text or f"HTTP {status} with an empty body",
                "type": "server_error",
                "param": None,
                "code": None,
            }
        }


def _seconds(value: str | None) -> float | None:
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and math.isfinite(seconds) else None
