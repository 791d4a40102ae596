"""The Batch API's HTTP edge: ``/v1/files`` and ``/v1/batches`` over a ``BatchStore``.

Files and batches belong to the caller's tenant (the API key's; ``OPEN_TENANT`` with
authentication off): another tenant's id is a 404, like an unknown one. A batch's input file
is validated when the batch is created, line by line, with the same checks a request sent to
the endpoint directly gets (``requests.parse_request``, served model, context length, body
size), so ``POST /v1/batches`` answers ``in_progress`` or ``failed`` (with ``errors``).
Running the lines is the dispatcher's job. Store calls block on disk: they run in a worker
thread. Every bad input is an OpenAI error envelope (400, 404, 413), never a 500.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator, Mapping
from typing import Any, BinaryIO

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from scheduler.batches import (
    BatchStore,
    BodyCheck,
    FileRecord,
    Page,
    Purpose,
    parse_window,
)
from scheduler.config import GatewayConfig
from scheduler.errors import (
    GearshiftError,
    InvalidRequest,
    ModelNotFound,
    PermissionDenied,
    RequestTooLarge,
)
from scheduler.gateway.auth import Caller, GatewayAuth
from scheduler.gateway.endpoints import EndpointTable
from scheduler.gateway.http_errors import domain_error_response, error_response
from scheduler.gateway.requests import (
    FIELDS,
    Endpoint,
    check_context,
    context_limit,
    parse_request,
)
from scheduler.tenants import resolve_class
from scheduler.types import TrafficClass

MULTIPART_OVERHEAD_BYTES = 64 * 1024
"""An upload's body may exceed ``max_file_bytes`` by this much (boundaries, ``purpose``)."""
CREATE_BODY_BYTES = 64 * 1024
"""Largest ``POST /v1/batches`` body (ids, the window and at most 16 metadata pairs)."""
CONTENT_CHUNK_BYTES = 256 * 1024
OPENAI_PURPOSES = frozenset({"assistants", "batch", "fine-tune", "vision", "user_data", "evals"})
CREATE_KEYS = frozenset({"input_file_id", "endpoint", "completion_window", "metadata"})

Handler = Callable[[Request, Caller], Awaitable[Response]]


def batch_routes(
    store: BatchStore | None,
    gateway: GatewayConfig,
    table: EndpointTable,
    auth: GatewayAuth,
    *,
    clock: Callable[[], float] = time.time,
) -> list[Route]:
    """The routes of ``/v1/files`` and ``/v1/batches`` (a 404 naming the setting when the
    gateway has no batch store)."""
    if store is None:
        return [Route(f"/v1/{name}{{rest:path}}", _disabled) for name in ("files", "batches")]
    api = _BatchApi(store, gateway, table, auth, clock)
    wrap = api.wrap
    return [
        Route("/v1/files", wrap(api.upload), methods=["POST"]),
        Route("/v1/files", wrap(api.list_files), methods=["GET"]),
        Route("/v1/files/{file_id}", wrap(api.get_file), methods=["GET"]),
        Route("/v1/files/{file_id}", wrap(api.delete_file), methods=["DELETE"]),
        Route("/v1/files/{file_id}/content", wrap(api.content), methods=["GET"]),
        Route("/v1/batches", wrap(api.create_batch), methods=["POST"]),
        Route("/v1/batches", wrap(api.list_batches), methods=["GET"]),
        Route("/v1/batches/{batch_id}", wrap(api.get_batch), methods=["GET"]),
        Route("/v1/batches/{batch_id}/cancel", wrap(api.cancel_batch), methods=["POST"]),
    ]


def gateway_body_check(gateway: GatewayConfig, table: EndpointTable) -> BodyCheck:
    """A batch line's body checked as if it were sent to its endpoint directly (body size,
    allowlist and caps, served model, context length); returns the model."""

    def check(endpoint: str, body: Mapping[str, Any]) -> str:
        raw = json.dumps(body).encode()
        limit = gateway.max_body_bytes
        if len(raw) > limit:
            raise RequestTooLarge(f"The request body exceeds {limit} bytes.", code="body_too_large")
        parsed = parse_request(
            Endpoint(endpoint), raw, max_tokens_cap=gateway.max_tokens_cap, max_n=gateway.max_n
        )
        if parsed.model not in table.models():
            raise ModelNotFound(parsed.model)
        check_context(parsed, context_limit(table.state.endpoints, parsed.model))
        return parsed.model

    return check


async def _disabled(request: Request) -> Response:
    return error_response(
        404,
        "The Batch API is not enabled on this gateway (config: batch.enabled).",
        code="batch_api_disabled",
    )


def _check_batch_class(caller: Caller) -> None:
    """``PermissionDenied`` for a key that may not use the batch class (every line runs in it)."""
    key = caller.key
    if key is None:
        return
    if resolve_class(TrafficClass.BATCH, key.classes, key.default_class).used is None:
        raise PermissionDenied(
            "This key may not use the batch class, which every batch runs in.",
            code="tier_not_allowed",
        )


def _page(page: Page[Any]) -> dict[str, Any]:
    data = [item.to_openai() for item in page.items]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": page.has_more,
    }


def _int_query(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise InvalidRequest(
            f"`{name}` must be an integer between {low} and {high}.",
            param=name,
            code="invalid_value",
        )
    return int(raw)


async def _capped(
    stream: AsyncIterator[bytes], limit: int, what: str
) -> AsyncGenerator[bytes, None]:
    size = 0
    async for chunk in stream:
        size += len(chunk)
        if size > limit:
            raise RequestTooLarge(f"{what} exceeds {limit} bytes.", code="body_too_large")
        yield chunk


def _chunks(handle: BinaryIO) -> Iterator[bytes]:
    try:
        while chunk := handle.read(CONTENT_CHUNK_BYTES):
            yield chunk
    finally:
        handle.close()


class _BatchApi:
    def __init__(
        self,
        store: BatchStore,
        gateway: GatewayConfig,
        table: EndpointTable,
        auth: GatewayAuth,
        clock: Callable[[], float],
    ) -> None:
        self.store = store
        self.gateway = gateway
        self.table = table
        self.auth = auth
        self.clock = clock
        self.check_body = gateway_body_check(gateway, table)

    def wrap(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        """Authenticate first; every domain error becomes its envelope."""

        async def endpoint(request: Request) -> Response:
            try:
                caller = self.auth.authenticate(request.headers.get("authorization"))
                return await handler(request, caller)
            except ClientDisconnect:
                return Response(status_code=499)
            except GearshiftError as exc:
                return domain_error_response(exc)

        return endpoint

    # ----------------------------------------------------------------------------- files

    async def upload(self, request: Request, caller: Caller) -> Response:
        media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if media != "multipart/form-data":
            raise InvalidRequest(
                "Upload a file as multipart/form-data with the fields `file` and `purpose`.",
                code="unsupported_content_type",
            )
        limit = self.store.config.max_file_bytes + MULTIPART_OVERHEAD_BYTES
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise RequestTooLarge(
                f"The file exceeds the limit of {self.store.config.max_file_bytes} bytes.",
                code="file_too_large",
            )
        parser = MultiPartParser(
            request.headers,
            _capped(request.stream(), limit, "The upload"),
            max_files=1,
            max_fields=4,
            max_part_size=CREATE_BODY_BYTES,
        )
        try:
            form = await parser.parse()
        except MultiPartException as exc:
            raise InvalidRequest(exc.message, code="invalid_multipart") from None
        try:
            purpose, upload = self._upload_fields(dict(form.multi_items()))
            record = await run_in_threadpool(
                self.store.create_file,
                caller.tenant,
                upload.filename or "file",
                purpose,
                upload.file,
                now=self.clock(),
            )
        finally:
            await form.close()
        return JSONResponse(record.to_openai())

    def _upload_fields(self, fields: Mapping[str, Any]) -> tuple[Purpose, UploadFile]:
        for key in fields:
            if key not in ("file", "purpose"):
                raise InvalidRequest(
                    f"Unrecognized request argument supplied: {key[:64]}",
                    param=key[:64],
                    code="unknown_parameter",
                )
        purpose, upload = fields.get("purpose"), fields.get("file")
        if not isinstance(purpose, str):
            raise InvalidRequest("Missing `purpose`.", param="purpose", code="missing")
        if purpose != Purpose.BATCH.value:
            where = (
                "is not supported by this deployment"
                if purpose in OPENAI_PURPOSES
                else ("is not a valid purpose")
            )
            raise InvalidRequest(
                f"`purpose` {purpose[:40]!r} {where}; use `batch`.",
                param="purpose",
                code="invalid_value",
            )
        if not isinstance(upload, UploadFile):
            raise InvalidRequest("Missing the file part `file`.", param="file", code="missing")
        return Purpose.BATCH, upload

    async def list_files(self, request: Request, caller: Caller) -> Response:
        order = request.query_params.get("order", "desc")
        if order not in ("asc", "desc"):
            raise InvalidRequest(
                "`order` must be asc or desc.", param="order", code="invalid_value"
            )
        page = await run_in_threadpool(
            self.store.list_files,
            caller.tenant,
            after=request.query_params.get("after"),
            limit=_int_query(request, "limit", 10_000, 1, 10_000),
            order="asc" if order == "asc" else "desc",
            purpose=request.query_params.get("purpose"),
        )
        return JSONResponse(_page(page))

    async def get_file(self, request: Request, caller: Caller) -> Response:
        file_id = request.path_params["file_id"]
        record = await run_in_threadpool(self.store.get_file, caller.tenant, file_id)
        return JSONResponse(record.to_openai())

    async def delete_file(self, request: Request, caller: Caller) -> Response:
        file_id = request.path_params["file_id"]
        record: FileRecord = await run_in_threadpool(
            self.store.delete_file, caller.tenant, file_id, now=self.clock()
        )
        return JSONResponse({"id": record.id, "object": "file", "deleted": True})

    async def content(self, request: Request, caller: Caller) -> Response:
        file_id = request.path_params["file_id"]
        record, handle = await run_in_threadpool(self.store.open_content, caller.tenant, file_id)
        return StreamingResponse(
            _chunks(handle),
            media_type="application/octet-stream",
            headers={"content-length": str(record.bytes)},
        )

    # --------------------------------------------------------------------------- batches

    async def create_batch(self, request: Request, caller: Caller) -> Response:
        body = await self._json_body(request)
        for key in body:
            if key not in CREATE_KEYS:
                raise InvalidRequest(
                    f"Unrecognized request argument supplied: {key[:64]}",
                    param=key[:64],
                    code="unknown_parameter",
                )
        input_file_id = body.get("input_file_id")
        if not isinstance(input_file_id, str) or not input_file_id:
            raise InvalidRequest(
                "`input_file_id` must name an uploaded file.", param="input_file_id", code="missing"
            )
        endpoint = body.get("endpoint")
        if not isinstance(endpoint, str) or endpoint not in {e.value for e in Endpoint}:
            supported = ", ".join(e.value for e in Endpoint)
            raise InvalidRequest(
                f"`endpoint` must be one of {supported} on this deployment.",
                param="endpoint",
                code="invalid_value",
            )
        window = body.get("completion_window")
        config = self.store.config
        window_s = parse_window(
            window,
            minimum_s=config.min_completion_window_s,
            maximum_s=config.max_completion_window_s,
        )
        metadata = body.get("metadata")
        if metadata is not None:
            FIELDS[Endpoint.CHAT]["metadata"].check("metadata", metadata)
        _check_batch_class(caller)
        batch = await run_in_threadpool(
            self.store.create_batch,
            caller.tenant,
            input_file_id=input_file_id,
            endpoint=str(endpoint),
            completion_window=str(window),
            window_s=window_s,
            metadata=metadata,
            now=self.clock(),
            key_id=caller.key.key_id if caller.key is not None else None,
        )
        batch = await run_in_threadpool(
            self.store.validate_batch, batch.id, self.check_body, now=self.clock()
        )
        return JSONResponse(batch.to_openai())

    async def _json_body(self, request: Request) -> dict[str, Any]:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > CREATE_BODY_BYTES:
            raise RequestTooLarge(
                f"The request body exceeds {CREATE_BODY_BYTES} bytes.", code="body_too_large"
            )
        chunks = [c async for c in _capped(request.stream(), CREATE_BODY_BYTES, "The body")]
        try:
            body = json.loads(b"".join(chunks))
        except (ValueError, UnicodeDecodeError, RecursionError):
            body = None
        if not isinstance(body, dict):
            raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
        return body

    async def list_batches(self, request: Request, caller: Caller) -> Response:
        page = await run_in_threadpool(
            self.store.list_batches,
            caller.tenant,
            after=request.query_params.get("after"),
            limit=_int_query(request, "limit", 20, 1, 100),
        )
        return JSONResponse(_page(page))

    async def get_batch(self, request: Request, caller: Caller) -> Response:
        batch_id = request.path_params["batch_id"]
        batch = await run_in_threadpool(self.store.get_batch, caller.tenant, batch_id)
        return JSONResponse(batch.to_openai())

    async def cancel_batch(self, request: Request, caller: Caller) -> Response:
        batch_id = request.path_params["batch_id"]
        batch = await run_in_threadpool(
            self.store.cancel_batch, caller.tenant, batch_id, now=self.clock()
        )
        return JSONResponse(batch.to_openai())
