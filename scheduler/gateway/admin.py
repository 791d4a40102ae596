"""The admin API, on its own port and behind a bearer token: fleet status for operators.

Never mounted on the public endpoint. ``GET /admin/v1/status`` is what ``gearshift status``
renders: replicas per model × accelerator with $/h, state and live load, nodes, demand
that could not be placed (with the reason), and per traffic class what the gateway served
(requests, TTFT p50/p99, tokens, $) read from its own metrics registry in this process.
"""

from __future__ import annotations

import hmac
from dataclasses import asdict

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from scheduler.gateway.endpoints import EndpointTable
from scheduler.gateway.http_errors import unauthorized
from scheduler.gateway.metrics import GatewayMetrics


def create_admin_app(
    table: EndpointTable, token: str, metrics: GatewayMetrics | None = None
) -> Starlette:
    def authorized(request: Request) -> bool:
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.encode(), token.encode())

    async def status(request: Request) -> Response:
        if not authorized(request):
            return unauthorized()
        document = table.state.status_document()
        for replica in document["replicas"]:
            replica["load"] = asdict(table.load(replica["replica_id"]))
        document["classes"] = metrics.class_summary() if metrics is not None else []
        return JSONResponse(document)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "fleet_version": table.state.version})

    return Starlette(
        routes=[
            Route("/admin/v1/status", status, methods=["GET"]),
            Route("/admin/v1/health", health, methods=["GET"]),
        ]
    )
