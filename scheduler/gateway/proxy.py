"""Forward a validated request to the picked engines and relay the answer.

Tries the routing decision's picks in order, moving on only before the first byte (connect
errors, engine 503/5xx); once an engine has answered 200 the response is committed. Streams
are relayed line by line; when the client goes away the upstream response is closed, which
aborts the request inside the engine. Every response says who served it (``x-gearshift-*``
headers) and which tier it got (``service_tier`` in the body and in each streamed chunk).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from starlette.responses import JSONResponse, Response, StreamingResponse

from scheduler.errors import UpstreamError
from scheduler.framework.routing import EndpointView
from scheduler.gateway.endpoints import EndpointTable
from scheduler.gateway.http_errors import error_response, normalize_upstream_error
from scheduler.types import TrafficClass

log = logging.getLogger(__name__)

_TIER_FIELD = re.compile(rb'"service_tier"\s*:\s*(null|"[^"]*")')
_CHOICE_CHUNK = b'"choices":[{'
"""A chunk that carries a choice: about one token each when the engine sends no usage."""
_USAGE_CHUNK = b'"usage":{'


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the proxy reports for metrics once a response is decided (or, streamed, finished).

    Times are seconds since dispatch. Token counts come from the engine's ``usage`` (the body,
    or a stream's final usage chunk); without one a stream counts its choice chunks as
    completion tokens and ``prompt_tokens`` stays None.
    """

    endpoint: EndpointView | None
    status: int
    first_byte_s: float | None
    e2e_s: float | None = None
    first_token_s: float | None = None
    """Streams only: when the first chunk arrived (a whole body has no first token)."""
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


OutcomeHook = Callable[[Outcome], None]


class EngineProxy:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        table: EndpointTable,
        *,
        connect_timeout_s: float,
        request_timeout_s: float,
    ) -> None:
        self._session = session
        self._table = table
        self._timeout = aiohttp.ClientTimeout(
            total=request_timeout_s, sock_connect=connect_timeout_s
        )

    @property
    def session(self) -> aiohttp.ClientSession:
        """The HTTP client sessions share (one connection pool per gateway)."""
        return self._session

    async def forward(
        self,
        picks: Sequence[EndpointView],
        path: str,
        body: dict[str, Any],
        *,
        stream: bool,
        tier: str,
        request_id: str,
        on_outcome: OutcomeHook,
        traffic_class: TrafficClass | None = None,
    ) -> Response:
        payload = json.dumps(body, separators=(",", ":")).encode()
        started = time.perf_counter()
        last_error = "no replica was tried"
        for endpoint in picks:
            self._table.acquire(endpoint.replica_id, traffic_class)
            released = False
            try:
                upstream = await self._session.post(
                    f"{endpoint.url}{path}",
                    data=payload,
                    headers={"Content-Type": "application/json", "X-Request-Id": request_id},
                    timeout=self._timeout,
                )
            except (aiohttp.ClientError, TimeoutError) as exc:
                self._table.release(endpoint.replica_id, traffic_class, reached_engine=False)
                last_error = f"{endpoint.replica_id}: {type(exc).__name__}: {exc}"
                log.info("engine unreachable, trying the next pick: %s", last_error)
                continue
            try:
                if upstream.status >= 500:
                    await upstream.read()
                    last_error = f"{endpoint.replica_id}: HTTP {upstream.status}"
                    log.info("engine answered %s, trying the next pick", upstream.status)
                    upstream.release()
                    continue
                headers = _headers(endpoint, tier, request_id)
                if upstream.status != 200:
                    text = await upstream.read()
                    upstream.release()
                    on_outcome(Outcome(endpoint, upstream.status, None))
                    failed = normalize_upstream_error(upstream.status, text)
                    failed.headers.update(headers)
                    return failed
                if stream:
                    released = True  # the stream's own finally releases
                    return StreamingResponse(
                        self._relay(upstream, endpoint, tier, started, on_outcome, traffic_class),
                        media_type="text/event-stream",
                        headers={**headers, "Cache-Control": "no-cache"},
                    )
                data = await upstream.read()
                elapsed = time.perf_counter() - started
                response, usage = _json_with_tier(data, tier, headers)
                on_outcome(
                    Outcome(
                        endpoint,
                        response.status_code,
                        elapsed,
                        e2e_s=elapsed,
                        prompt_tokens=_count(usage, "prompt_tokens"),
                        completion_tokens=_count(usage, "completion_tokens"),
                    )
                )
                return response
            except (aiohttp.ClientError, TimeoutError) as exc:
                upstream.close()
                last_error = f"{endpoint.replica_id}: {type(exc).__name__}: {exc}"
                on_outcome(Outcome(endpoint, 502, None))
                raise UpstreamError(f"the engine failed mid-response ({last_error})") from None
            finally:
                if not released:
                    self._table.release(endpoint.replica_id, traffic_class)
        on_outcome(Outcome(None, 503, None))
        return error_response(
            503,
            f"No engine could take the request ({last_error}).",
            "server_error",
            code="no_capacity",
            headers={"Retry-After": "1"},
        )

    async def _relay(
        self,
        upstream: aiohttp.ClientResponse,
        endpoint: EndpointView,
        tier: str,
        started: float,
        on_outcome: OutcomeHook,
        traffic_class: TrafficClass | None,
    ) -> AsyncIterator[bytes]:
        tier_bytes = json.dumps(tier).encode()
        first_byte: float | None = None
        status = 200
        chunks = 0
        usage: dict[str, Any] | None = None
        try:
            async for line in upstream.content:
                if first_byte is None:
                    first_byte = time.perf_counter() - started
                if line.startswith(b"data: {"):
                    chunks += _CHOICE_CHUNK in line
                    if _USAGE_CHUNK in line:
                        usage = _usage(line[len(b"data: ") :]) or usage
                    line = _splice_tier(line, tier_bytes)
                yield line
        except (aiohttp.ClientError, TimeoutError) as exc:
            # Headers are gone already: end with an SSE error event and no [DONE], so clients
            # see a failure instead of a silently truncated answer.
            status = 502
            error = {
                "error": {
                    "message": f"The engine failed mid-stream: {type(exc).__name__}",
                    "type": "server_error",
                    "param": None,
                    "code": "upstream_error",
                }
            }
            yield b"data: " + json.dumps(error).encode() + b"\n\n"
        finally:
            # Closing the connection is how a vanished client (this runs on cancellation)
            # makes the engine abort the request and free its KV cache. A stream read to its
            # end could go back to the pool instead; reusing it made a CI run hang once
            # (test_real_vllm), so every stream closes its connection until that is understood.
            upstream.close()
            self._table.release(endpoint.replica_id, traffic_class)
            completion = _count(usage, "completion_tokens")
            on_outcome(
                Outcome(
                    endpoint,
                    status,
                    first_byte,
                    e2e_s=time.perf_counter() - started,
                    first_token_s=first_byte,
                    prompt_tokens=_count(usage, "prompt_tokens"),
                    completion_tokens=chunks if completion is None else completion,
                )
            )


def _headers(endpoint: EndpointView, tier: str, request_id: str) -> dict[str, str]:
    return {
        "x-gearshift-replica": endpoint.replica_id,
        "x-gearshift-accelerator": endpoint.accelerator,
        "x-gearshift-service-tier": tier,
        "x-request-id": request_id,
    }


def _json_with_tier(
    data: bytes, tier: str, headers: dict[str, str]
) -> tuple[Response, dict[str, Any] | None]:
    """The engine's body with our ``service_tier``, and its ``usage`` object if it has one."""
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):
        return normalize_upstream_error(502, data), None
    usage = None
    if isinstance(document, dict):
        document["service_tier"] = tier
        usage = document.get("usage") if isinstance(document.get("usage"), dict) else None
    return JSONResponse(document, headers=headers), usage


def _usage(payload: bytes) -> dict[str, Any] | None:
    """The ``usage`` object of one streamed chunk, if it parses and has one."""
    try:
        chunk = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    usage = chunk.get("usage") if isinstance(chunk, dict) else None
    return usage if isinstance(usage, dict) else None


def _count(usage: dict[str, Any] | None, key: str) -> int | None:
    value = usage.get(key) if usage else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _splice_tier(line: bytes, tier: bytes) -> bytes:
    """Set ``service_tier`` in one ``data: {...}`` SSE line without re-parsing the JSON."""
    if b'"service_tier"' in line:
        return _TIER_FIELD.sub(b'"service_tier":' + tier, line, count=1)
    end = line.rstrip().rfind(b"}")
    if end < 0:
        return line
    return line[:end] + b',"service_tier":' + tier + line[end:]
