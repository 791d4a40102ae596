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
from scheduler.gateway.requests import FIELDS, Endpoint, request_schema

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


# ------------------------------------------------------------------------- Batch API

_BATCH_ERRORS = {
    "400": "Invalid input: a bad field, cursor or purpose; a batch that cannot be cancelled.",
    "403": "The key may not use the batch class.",
    "404": "No such file or batch for this caller (another tenant's is the same).",
    "413": "File larger than batch.max_file_bytes.",
}
_NULLABLE_INT = {"type": ["integer", "null"]}
_NULLABLE_STRING = {"type": ["string", "null"]}


def _batch_errors(*codes: str) -> dict[str, Any]:
    return {code: _json(_ref("ErrorResponse"), _BATCH_ERRORS[code]) for code in codes}


def _id_parameter(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _query(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema}


def _list_of(item: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["object", "data", "first_id", "last_id", "has_more"],
        "properties": {
            "object": {"const": "list"},
            "data": {"type": "array", "items": _ref(item)},
            "first_id": _NULLABLE_STRING,
            "last_id": _NULLABLE_STRING,
            "has_more": {"type": "boolean"},
        },
    }


def _batch_schemas(metadata: dict[str, Any]) -> dict[str, Any]:
    stamps = [
        f"{name}_at"
        for name in ("in_progress", "finalizing", "completed", "failed", "expired")
        + ("cancelling", "cancelled")
    ]
    error = {
        "type": "object",
        "properties": {
            "code": {"type": "string"},
            "message": {"type": "string"},
            "param": _NULLABLE_STRING,
            "line": _NULLABLE_INT,
        },
    }
    counts = {
        "type": "object",
        "required": ["total", "completed", "failed"],
        "properties": {key: {"type": "integer"} for key in ("total", "completed", "failed")},
    }
    batch_properties: dict[str, Any] = {
        "id": {"type": "string"},
        "object": {"const": "batch"},
        "endpoint": {"type": "string"},
        "model": _NULLABLE_STRING,
        "errors": {
            "oneOf": [
                {"type": "null"},
                {
                    "type": "object",
                    "properties": {
                        "object": {"const": "list"},
                        "data": {"type": "array", "items": error},
                    },
                },
            ]
        },
        "input_file_id": {"type": "string"},
        "completion_window": {"type": "string"},
        "status": {
            "enum": [
                "validating",
                "failed",
                "in_progress",
                "finalizing",
                "completed",
                "expired",
                "cancelling",
                "cancelled",
            ]
        },
        "output_file_id": _NULLABLE_STRING,
        "error_file_id": _NULLABLE_STRING,
        "created_at": {"type": "integer"},
        "expires_at": {"type": "integer"},
        **{stamp: _NULLABLE_INT for stamp in stamps},
        "request_counts": counts,
        "metadata": {"oneOf": [{"type": "null"}, metadata]},
    }
    return {
        "File": {
            "type": "object",
            "required": ["id", "object", "bytes", "created_at", "filename", "purpose", "status"],
            "properties": {
                "id": {"type": "string"},
                "object": {"const": "file"},
                "bytes": {"type": "integer"},
                "created_at": {"type": "integer"},
                "filename": {"type": "string"},
                "purpose": {"enum": ["batch", "batch_output"]},
                "status": {"const": "processed"},
                "expires_at": _NULLABLE_INT,
                "status_details": _NULLABLE_STRING,
            },
        },
        "FileList": _list_of("File"),
        "FileDeleted": {
            "type": "object",
            "required": ["id", "object", "deleted"],
            "properties": {
                "id": {"type": "string"},
                "object": {"const": "file"},
                "deleted": {"type": "boolean"},
            },
        },
        "FileUpload": {
            "type": "object",
            "required": ["file", "purpose"],
            "additionalProperties": False,
            "properties": {
                "file": {"type": "string", "format": "binary"},
                "purpose": {"const": "batch"},
            },
        },
        "CreateBatchRequest": {
            "type": "object",
            "required": ["input_file_id", "endpoint", "completion_window"],
            "additionalProperties": False,
            "properties": {
                "input_file_id": {"type": "string"},
                "endpoint": {"enum": [endpoint.value for endpoint in Endpoint]},
                "completion_window": {
                    "type": "string",
                    "description": "`24h`, or a duration such as `90s`, `30m` or `2h` within "
                    "batch.min_completion_window_s and batch.max_completion_window_s.",
                    "pattern": "^[1-9][0-9]{0,6}[smh]$",
                },
                "metadata": metadata,
            },
        },
        "Batch": {
            "type": "object",
            "required": sorted(batch_properties),
            "properties": batch_properties,
        },
        "BatchList": _list_of("Batch"),
    }


def _batch_paths() -> dict[str, Any]:
    file_id, batch_id = _id_parameter("file_id"), _id_parameter("batch_id")
    after = _query("after", {"type": "string"})
    return {
        "/v1/files": {
            "post": {
                "summary": "Upload a batch input file (JSONL, purpose `batch`).",
                "requestBody": {
                    "required": True,
                    "content": {"multipart/form-data": {"schema": _ref("FileUpload")}},
                },
                "responses": {
                    "200": _json(_ref("File"), "The stored file."),
                    **_batch_errors("400", "413"),
                },
            },
            "get": {
                "summary": "List the caller's files.",
                "parameters": [
                    after,
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": 10_000}),
                    _query("order", {"enum": ["asc", "desc"]}),
                    _query("purpose", {"type": "string"}),
                ],
                "responses": {
                    "200": _json(_ref("FileList"), "Files, newest first."),
                    **_batch_errors("400"),
                },
            },
        },
        "/v1/files/{file_id}": {
            "get": {
                "summary": "One file.",
                "parameters": [file_id],
                "responses": {"200": _json(_ref("File"), "The file."), **_batch_errors("404")},
            },
            "delete": {
                "summary": "Delete a file.",
                "parameters": [file_id],
                "responses": {
                    "200": _json(_ref("FileDeleted"), "Deleted."),
                    **_batch_errors("404"),
                },
            },
        },
        "/v1/files/{file_id}/content": {
            "get": {
                "summary": "A file's bytes.",
                "parameters": [file_id],
                "responses": {
                    "200": {
                        "description": "The file's content.",
                        "content": {"application/octet-stream": {"schema": {"type": "string"}}},
                    },
                    **_batch_errors("404"),
                },
            }
        },
        "/v1/batches": {
            "post": {
                "summary": "Create a batch; its input file is validated before the answer.",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("CreateBatchRequest")}},
                },
                "responses": {
                    "200": _json(_ref("Batch"), "The batch: in_progress, or failed with errors."),
                    **_batch_errors("400", "403", "404", "413"),
                },
            },
            "get": {
                "summary": "List the caller's batches, newest first.",
                "parameters": [
                    after,
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": 100}),
                ],
                "responses": {
                    "200": _json(_ref("BatchList"), "Batches."),
                    **_batch_errors("400"),
                },
            },
        },
        "/v1/batches/{batch_id}": {
            "get": {
                "summary": "One batch.",
                "parameters": [batch_id],
                "responses": {"200": _json(_ref("Batch"), "The batch."), **_batch_errors("404")},
            }
        },
        "/v1/batches/{batch_id}/cancel": {
            "post": {
                "summary": "Cancel a batch: lines in flight finish, the rest go to the error file.",
                "parameters": [batch_id],
                "responses": {
                    "200": _json(_ref("Batch"), "The batch: cancelling or cancelled."),
                    **_batch_errors("400", "404"),
                },
            }
        },
    }


def openapi_document(gateway: GatewayConfig, *, batch: bool = False) -> dict[str, Any]:
    """The document for a gateway with these settings (its caps appear as maxima); with
    ``batch``, the Batch API's paths too."""
    metadata = dict(FIELDS[Endpoint.CHAT]["metadata"].schema)
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
            **(_batch_paths() if batch else {}),
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
                **(_batch_schemas(metadata) if batch else {}),
            }
        },
    }


def openapi_route(gateway: GatewayConfig, *, batch: bool = False) -> Route:
    """``GET /openapi.json``; the document is built once."""
    document = openapi_document(gateway, batch=batch)

    async def openapi(request: Request) -> Response:
        return JSONResponse(document)

    return Route("/openapi.json", openapi, methods=["GET"])
