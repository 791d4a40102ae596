"""The only place domain errors become HTTP status codes and OpenAI error envelopes.

Envelope: ``{"error": {"message", "type", "param", "code"}}`` with all four keys present
(``param``/``code`` string or null), as the OpenAI spec requires.
"""

from __future__ import annotations

import json
import math
from typing import Any

from starlette.responses import JSONResponse

from scheduler.errors import (
    GearshiftError,
    InvalidRequest,
    ModelNotFound,
    NoCapacity,
    ObjectNotFound,
    PermissionDenied,
    RateLimited,
    RequestError,
    RequestTooLarge,
    Unauthenticated,
    UpstreamError,
)


def envelope(
    message: str, type_: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_response(
    status: int,
    message: str,
    type_: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(envelope(message, type_, param, code), status_code=status, headers=headers)


def status_for(exc: GearshiftError) -> int:
    if isinstance(exc, ModelNotFound | ObjectNotFound):
        return 404
    if isinstance(exc, RequestTooLarge):
        return 413
    if isinstance(exc, InvalidRequest):
        return 400
    if isinstance(exc, NoCapacity):
        return 503
    if isinstance(exc, Unauthenticated):
        return 401
    if isinstance(exc, PermissionDenied):
        return 403
    if isinstance(exc, RateLimited):
        return 429
    if isinstance(exc, UpstreamError):
        return 502
    return 500


def domain_error_response(exc: GearshiftError) -> JSONResponse:
    """The HTTP response for a domain error."""
    status = status_for(exc)
    if isinstance(exc, NoCapacity):
        retry_after = str(max(1, math.ceil(exc.retry_after_s)))
        return error_response(
            status, exc.message, "server_error", None, exc.code, {"Retry-After": retry_after}
        )
    if isinstance(exc, RateLimited):
        retry_after = str(max(1, math.ceil(exc.retry_after_s)))
        return error_response(
            status, exc.message, "rate_limit_error", None, exc.code, {"Retry-After": retry_after}
        )
    if isinstance(exc, RequestError):
        return error_response(status, exc.message, "invalid_request_error", exc.param, exc.code)
    if isinstance(exc, UpstreamError):
        return error_response(status, str(exc), "server_error", None, "upstream_error")
    return error_response(
        status, "The server had an error processing your request.", "server_error"
    )


def normalize_upstream_error(status: int, body: bytes) -> JSONResponse:
    """An engine's error (vLLM shape, plain text, anything) as an OpenAI envelope.

    4xx keep their status (the request was bad); 5xx become 502 (the engine failed).
    """
    message, param = _upstream_message(body)
    if 400 <= status < 500:
        type_ = "invalid_request_error"
        return error_response(status, message, type_, param, _code_for(status))
    return error_response(
        502, f"The engine failed: {message}", "server_error", None, "upstream_error"
    )


def _upstream_message(body: bytes) -> tuple[str, str | None]:
    text = body.decode("utf-8", errors="replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return (text[:500] or "empty response from the engine"), None
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        param = error.get("param")
        return str(error.get("message") or text[:500]), param if isinstance(param, str) else None
    if isinstance(data, dict) and "message" in data:  # vLLM's older flat shape
        param = data.get("param")
        return str(data["message"]), param if isinstance(param, str) else None
    return text[:500], None


def _code_for(status: int) -> str | None:
    return {404: "model_not_found", 429: "rate_limit_exceeded"}.get(status)


def routing_error(status: int, method: str, path: str) -> JSONResponse:
    """An unknown path (404) or a method the path does not take (405), as an envelope."""
    if status == 405:
        return error_response(405, f"Method {method} is not allowed on {path}.")
    return error_response(
        status, f"Unknown path {path}.", code="not_found" if status == 404 else None
    )


def unauthorized() -> JSONResponse:
    return error_response(401, "Missing or wrong admin token.", code="invalid_api_key")


def readiness(ready_replicas: int, *, draining: bool = False) -> JSONResponse:
    """200 while at least one replica can serve and the gateway is not shutting down, else 503
    (load balancers stop sending)."""
    if draining:
        return JSONResponse({"status": "draining", "ready_replicas": ready_replicas}, 503)
    return JSONResponse(
        {"ready_replicas": ready_replicas}, status_code=200 if ready_replicas else 503
    )
