"""The admin API, on its own port and behind a bearer token: fleet status for operators.

Never mounted on the public endpoint. ``GET /admin/v1/status`` is what ``gearshift status``
renders: replicas per model × accelerator with $/h, state and live load, nodes, and demand
that could not be placed (with the reason).
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


def create_admin_app(table: EndpointTable, token: str) -> Starlette:
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
        return JSONResponse(document)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "fleet_version": table.state.version})

    return Starlette(
        routes=[
            Route("/admin/v1/status", status, methods=["GET"]),
            Route("/admin/v1/health", health, methods=["GET"]),
        ]
    )
