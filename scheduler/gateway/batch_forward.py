"""``/v1/files`` and ``/v1/batches`` on a gateway that does not hold the batch store: relayed
to the one that does (``gateway.batch_upstream``, e.g. the head's gateway on Kubernetes).

The batch store is one SQLite database on one volume, so exactly one gateway opens it; the
others forward these routes unchanged (method, path, query, body, ``Authorization``), stream
the answer back, and answer 502 with an OpenAI envelope when the upstream cannot be reached.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from scheduler.gateway.http_errors import error_response

FORWARDED_REQUEST_HEADERS = ("authorization", "content-type", "content-length", "x-request-id")
FORWARDED_RESPONSE_HEADERS = ("content-type", "retry-after", "x-request-id")


def forward_routes(upstream: str, session: aiohttp.ClientSession, timeout_s: float) -> list[Route]:
    """Routes relaying every method under ``/v1/files`` and ``/v1/batches`` to ``upstream``."""
    base = upstream.rstrip("/")
    timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def relay(request: Request) -> Response:
        url = f"{base}{request.url.path}"
        if request.url.query:
            url = f"{url}?{request.url.query}"
        headers = {
            name: value
            for name, value in request.headers.items()
            if name.lower() in FORWARDED_REQUEST_HEADERS
        }
        try:
            upstream_response = await session.request(
                request.method, url, data=request.stream(), headers=headers, timeout=timeout
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            return error_response(
                502,
                f"The batch store's gateway is unreachable ({type(exc).__name__}).",
                "server_error",
                code="batch_upstream_unreachable",
            )
        return StreamingResponse(
            _body(upstream_response),
            status_code=upstream_response.status,
            headers={
                name: value
                for name, value in upstream_response.headers.items()
                if name.lower() in FORWARDED_RESPONSE_HEADERS and name.lower() != "content-type"
            },
            media_type=upstream_response.headers.get("content-type"),
        )

    methods = ["GET", "POST", "DELETE"]
    return [
        Route(f"/v1/{name}{{rest:path}}", relay, methods=methods) for name in ("files", "batches")
    ]


async def _body(response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    try:
        async for chunk in response.content.iter_any():
            yield chunk
    finally:
        response.release()
