"""``create_app``: the OpenAI-compatible endpoint (no module-level state).

One request: authenticate (API key) → read (size-capped) → validate (allowlist, caps, context)
→ class (the key's policy over ``service_tier``, rate limits) → count demand → route (the
class's profile) → admission (per-class queues; batch waits while the fleet is saturated) →
proxy. Every error is an OpenAI envelope; bad input is a 4xx, never a 5xx.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from scheduler.batches import BatchStore
from scheduler.config import GatewayConfig, TrafficClassesConfig
from scheduler.errors import GearshiftError, ModelNotFound, NoCapacity, RequestTooLarge
from scheduler.framework.routing import Cycle, EndpointView, RouteRequest
from scheduler.gateway.admission import AdmissionGate, fleet_saturation
from scheduler.gateway.auth import Caller, GatewayAuth
from scheduler.gateway.batch_api import batch_routes
from scheduler.gateway.batch_forward import forward_routes
from scheduler.gateway.endpoints import EndpointTable
from scheduler.gateway.http_errors import (
    domain_error_response,
    error_response,
    readiness,
    routing_error,
)
from scheduler.gateway.metrics import GatewayMetrics
from scheduler.gateway.openapi import openapi_route
from scheduler.gateway.proxy import EngineProxy, Outcome
from scheduler.gateway.requests import Endpoint, check_context, context_limit, parse_request
from scheduler.placement.demand import DemandTracker
from scheduler.routing.pipeline import RoutingDecision, RoutingProfile
from scheduler.types import TIER_FOR_CLASS, ReplicaState, TrafficClass

log = logging.getLogger(__name__)

DEMAND_OUTPUT_TOKENS_UNSET = 256
"""Output tokens a request without ``max_tokens`` counts for in the demand estimate (the gateway
sees what was asked for, not what was generated)."""


@dataclass(slots=True)
class Lifecycle:
    """The gateway's shutdown state, shared by its routes and the server that runs them."""

    draining: bool = False


@dataclass(frozen=True, slots=True)
class GatewayDeps:
    """Everything the endpoint needs, built by the composition root (``gearshift serve``)."""

    gateway: GatewayConfig
    classes: TrafficClassesConfig
    profiles: Mapping[TrafficClass, RoutingProfile]
    table: EndpointTable
    proxy: EngineProxy
    metrics: GatewayMetrics
    rng: random.Random
    demand: DemandTracker
    """Every valid request for a served model counts, refused or not: demand drives placement."""
    routed: Counter[str] = field(default_factory=Counter)
    """Requests routed per model, as ``Cycle.sequence`` (pickers that take turns read it)."""
    auth: GatewayAuth = field(default_factory=GatewayAuth.open)
    """API keys, class policy and per-key rate limits (open: no keys, no limits)."""
    clock: Callable[[], float] = time.time
    """The routing clock (``Cycle.now``, interactive work's end times): wall-clock seconds."""
    batches: BatchStore | None = None
    """The Batch API's store (None: /v1/files and /v1/batches answer 404)."""
    lifecycle: Lifecycle = field(default_factory=lambda: Lifecycle())
    """Set to draining on SIGTERM: /ready answers 503 while requests are still served."""


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestTooLarge(f"The request body exceeds {limit} bytes.", code="body_too_large")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestTooLarge(f"The request body exceeds {limit} bytes.", code="body_too_large")
        chunks.append(chunk)
    return b"".join(chunks)


def _batch_routes(deps: GatewayDeps) -> list[Route]:
    """The Batch API: served from this gateway's store, relayed to the gateway that holds it,
    or 404s naming the setting."""
    upstream = deps.gateway.batch_upstream
    if deps.batches is None and upstream:
        return forward_routes(upstream, deps.proxy.session, deps.gateway.request_timeout_s)
    return batch_routes(deps.batches, deps.gateway, deps.table, deps.auth, clock=deps.clock)


def create_app(deps: GatewayDeps) -> Starlette:
    settings = deps.gateway.admission
    admission = AdmissionGate(
        settings,
        lambda model, traffic_class: fleet_saturation(
            deps.table.candidates(model),
            settings.full_queue_depth,
            yield_s=settings.limits(traffic_class).yield_to_interactive_s,
            now=deps.clock(),
        ),
        retry_after_s=deps.gateway.retry_after_s,
    )

    def route(route_request: RouteRequest) -> tuple[list[EndpointView], RoutingDecision]:
        """The class's profile over the model's replicas; raises when none can take it."""
        model, traffic_class = route_request.model, route_request.traffic_class
        candidates = deps.table.candidates(model)
        if not candidates:
            raise NoCapacity(
                f"No replica of `{model}` is running yet.",
                retry_after_s=deps.gateway.retry_after_s,
            )
        started = time.perf_counter()
        cycle = Cycle(now=deps.clock(), rng=deps.rng, sequence=deps.routed[model])
        deps.routed[model] += 1
        decision = deps.profiles[traffic_class].run(route_request, candidates, cycle)
        deps.metrics.routing.labels(traffic_class.value).observe(time.perf_counter() - started)
        decision.raise_if_empty(deps.gateway.retry_after_s)
        return candidates, decision

    def authenticate(request: Request) -> Caller | Response:
        """The caller, or the 401 to answer with (before the body is read)."""
        try:
            return deps.auth.authenticate(request.headers.get("authorization"))
        except GearshiftError as exc:
            return domain_error_response(exc)

    async def completions(request: Request, endpoint: Endpoint) -> Response:
        caller = authenticate(request)
        if isinstance(caller, Response):
            return caller
        response = await serve_completion(request, endpoint, caller)
        response.headers.update(caller.headers)  # rate limits, tier downgrade
        return response

    async def serve_completion(request: Request, endpoint: Endpoint, caller: Caller) -> Response:
        traffic_class = TrafficClass.STANDARD
        try:
            raw = await _read_body(request, deps.gateway.max_body_bytes)
            parsed = parse_request(
                endpoint,
                raw,
                max_tokens_cap=deps.gateway.max_tokens_cap,
                max_n=deps.gateway.max_n,
                content_type=request.headers.get("content-type"),
            )
            traffic_class = deps.auth.admit(
                caller,
                parsed.service_tier,
                parsed.prompt_tokens + (parsed.max_tokens or DEMAND_OUTPUT_TOKENS_UNSET),
            )
            if parsed.model not in deps.table.models():
                raise ModelNotFound(parsed.model)
            check_context(parsed, context_limit(deps.table.state.endpoints, parsed.model))
            deps.demand.observe(
                parsed.model,
                traffic_class,
                parsed.prompt_tokens,
                parsed.max_tokens or DEMAND_OUTPUT_TOKENS_UNSET,
                time.monotonic(),
            )
            route_request = RouteRequest(
                model=parsed.model,
                traffic_class=traffic_class,
                prompt_tokens=parsed.prompt_tokens,
                max_tokens=parsed.max_tokens or 1,
                stream=parsed.stream,
                ttft_target_s=deps.classes.targets(traffic_class).ttft_s,
                yield_s=deps.gateway.admission.limits(traffic_class).yield_to_interactive_s,
            )
            candidates, decision = route(route_request)
            admitted = await admission.admit(
                parsed.model,
                traffic_class,
                len(raw),
                request.is_disconnected,
                tenant=caller.tenant,
            )
            deps.metrics.queue_wait.labels(traffic_class.value).observe(admitted.waited_s)
            if admitted.queued:  # loads changed while it waited: route again
                candidates, decision = route(route_request)
        except ClientDisconnect:
            return Response(status_code=499)
        except GearshiftError as exc:
            reason = getattr(exc, "code", None) or type(exc).__name__
            deps.metrics.rejections.labels(traffic_class.value, reason).inc()
            return domain_error_response(exc)

        by_id = {candidate.replica_id: candidate for candidate in candidates}
        body = dict(parsed.body)
        body["priority"] = deps.classes.targets(traffic_class).engine_priority
        tier = TIER_FOR_CLASS[traffic_class].value
        request_id = request.headers.get("x-request-id") or f"req-{uuid.uuid4().hex}"

        def record(outcome: Outcome) -> None:
            deps.metrics.observe(
                parsed.model, traffic_class.value, outcome, parsed.prompt_tokens
            )

        try:
            return await deps.proxy.forward(
                [by_id[rid] for rid in decision.picks],
                endpoint.value,
                body,
                stream=parsed.stream,
                tier=tier,
                request_id=request_id,
                on_outcome=record,
                traffic_class=traffic_class,
            )
        except GearshiftError as exc:
            return domain_error_response(exc)

    async def chat(request: Request) -> Response:
        return await completions(request, Endpoint.CHAT)

    async def text(request: Request) -> Response:
        return await completions(request, Endpoint.COMPLETIONS)

    def model_card(name: str) -> dict[str, object]:
        return {"id": name, "object": "model", "created": 0, "owned_by": "gearshift"}

    async def models(request: Request) -> Response:
        if isinstance(caller := authenticate(request), Response):
            return caller
        return JSONResponse(
            {"object": "list", "data": [model_card(name) for name in deps.table.models()]}
        )

    async def model(request: Request) -> Response:
        if isinstance(caller := authenticate(request), Response):
            return caller
        name = request.path_params["model"]
        if name not in deps.table.models():
            return domain_error_response(ModelNotFound(name))
        return JSONResponse(model_card(name))

    def ready_replicas() -> int:
        return sum(1 for e in deps.table.state.endpoints if e.state is ReplicaState.READY)

    async def health(request: Request) -> Response:
        """Liveness: the gateway process answers."""
        return JSONResponse({"status": "ok", "ready_replicas": ready_replicas()})

    async def ready(request: Request) -> Response:
        """Readiness: at least one replica can serve, and the gateway is not shutting down."""
        return readiness(ready_replicas(), draining=deps.lifecycle.draining)

    async def metrics(request: Request) -> Response:
        deps.metrics.endpoints.clear()
        for endpoint in deps.table.state.endpoints:
            deps.metrics.endpoints.labels(
                endpoint.model, endpoint.accelerator, endpoint.state.value
            ).inc()
        deps.metrics.cost.set(deps.table.state.cost_per_hour)
        return Response(deps.metrics.exposition(), media_type="text/plain; version=0.0.4")

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return routing_error(exc.status_code, request.method, request.url.path)

    async def internal_error(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s", request.url.path, exc_info=exc)
        return error_response(
            500, "The server had an error processing your request.", "server_error"
        )

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/completions", text, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/v1/models/{model:path}", model, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
            Route("/ready", ready, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            openapi_route(deps.gateway, batch=deps.batches is not None),
            *_batch_routes(deps),
        ],
        exception_handlers={HTTPException: http_error, Exception: internal_error},
    )
    app.state.admission = admission  # read by tests and operators' debuggers, never by routes
    return app
