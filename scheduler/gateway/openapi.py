"""The public endpoint's OpenAPI 3.1 document, served at ``GET /openapi.json``.

Request schemas are built from the validator's own allowlist (``requests.FIELDS``) with this
deployment's caps, so what the document promises is what ``parse_request`` accepts.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from scheduler.config import GatewayConfig
from scheduler.gateway.requests import Endpoint, request_schema

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "additionalProperties": False,
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}
"""OpenAI's error envelope: all four keys always present."""

_MODEL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "object", "created", "owned_by"],
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "model"},
        "created": {"type": "integer"},
        "owned_by": {"type": "string"},
    },
}

_ERRORS = {
    "400": "Invalid body: unknown or out-of-range field, bad JSON, context too long.",
    "404": "Unknown model or path.",
    "405": "Method not allowed on this path.",
    "413": "Body larger than the gateway's limit.",
    "502": "The engine failed.",
    "503": "No replica can take the request now; see Retry-After.",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: str) -> dict[str, Any]:
    return {code: _json(_ref("ErrorResponse"), _ERRORS[code]) for code in codes}


def _completion_path(schema_name: str, summary: str) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref(schema_name)}},
            },
            "responses": {
                "200": {
                    "description": "The engine's answer (a JSON object, or an SSE stream when "
                    "`stream` is true).",
                    "content": {
                        "application/json": {"schema": {"type": "object"}},
                        "text/event-stream": {"schema": {"type": "string"}},
                    },
                },
                **_errors("400", "404", "405", "413", "502", "503"),
            },
        }
    }


def openapi_document(gateway: GatewayConfig) -> dict[str, Any]:
    """The document for a gateway with these settings (its caps appear as maxima)."""
    caps = {"max_tokens_cap": gateway.max_tokens_cap, "max_n": gateway.max_n}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Gearshift OpenAI-compatible gateway", "version": "1"},
        "paths": {
            Endpoint.CHAT.value: _completion_path(
                "ChatCompletionRequest", "Create a chat completion."
            ),
            Endpoint.COMPLETIONS.value: _completion_path(
                "CompletionRequest", "Create a text completion."
            ),
            "/v1/models": {
                "get": {
                    "summary": "List the served models.",
                    "responses": {"200": _json(_ref("ModelList"), "The served models.")},
                }
            },
            "/v1/models/{model}": {
                "get": {
                    "summary": "One served model.",
                    "parameters": [
                        {
                            "name": "model",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {
                        "200": _json(_ref("Model"), "The model."),
                        **_errors("404"),
                    },
                }
            },
        },
        "components": {
            "schemas": {
                "ChatCompletionRequest": request_schema(Endpoint.CHAT, **caps),
                "CompletionRequest": request_schema(Endpoint.COMPLETIONS, **caps),
                "Model": _MODEL_SCHEMA,
                "ModelList": {
                    "type": "object",
                    "required": ["object", "data"],
                    "properties": {
                        "object": {"const": "list"},
                        "data": {"type": "array", "items": _ref("Model")},
                    },
                },
                "ErrorResponse": ERROR_SCHEMA,
            }
        },
    }


def openapi_route(gateway: GatewayConfig) -> Route:
    """``GET /openapi.json``; the document is built once."""
    document = openapi_document(gateway)

    async def openapi(request: Request) -> Response:
        return JSONResponse(document)

    return Route("/openapi.json", openapi, methods=["GET"])
