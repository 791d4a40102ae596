"""The sim engine's HTTP edge: an OpenAI-compatible Starlette app in front of one ``Batcher``.

Routes: ``POST /v1/chat/completions``, ``POST /v1/completions`` (streamed or not),
``GET /v1/models``, ``GET /health`` (503 once the engine loop has died, like vLLM's
``EngineDeadError``), ``GET /metrics``. Every response carries ``x-gearshift-engine: sim``.

Errors use vLLM's envelope, not OpenAI's (the gateway normalises):
``{"error": {"message", "type", "param", "code": <int status>}}`` with type ``BadRequestError``
(400) or ``NotFoundError`` (404), or the HTTP reason phrase for routing errors. Bad input never
yields a 500. This module is the only place that maps the engine's errors to status codes.

A client that disconnects aborts its request: the streamed body aborts it when cancelled, and a
non-streamed request watches for ``http.disconnect`` while it waits for its tokens.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from http import HTTPStatus
from typing import Literal, TypeVar

import pydantic
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nodes.engines.sim import text
from nodes.engines.sim.batcher import ABORT, Batcher, StepTimeModel, TokenStream
from nodes.engines.sim.metrics import CONTENT_TYPE, EngineMetrics
from nodes.engines.sim.protocol import (
    ChatCompletionBody,
    CompletionBody,
    PreparedRequest,
    Renderer,
    prepare_chat,
    prepare_completion,
    usage,
)
from nodes.engines.sim.spec import SimEngineSpec, token_budget
from scheduler.errors import InvalidRequest, ModelNotFound

log = logging.getLogger(__name__)

ENGINE_HEADER = (b"x-gearshift-engine", b"sim")
OWNED_BY = "gearshift-sim"

_Body = TypeVar("_Body", ChatCompletionBody, CompletionBody)


def create_app(spec: SimEngineSpec, step_model: StepTimeModel) -> Starlette:
    """The ASGI app of one sim engine; its lifespan runs the engine loop.

    ``step_model`` times the steps: ``spec.step_time_model(spec)`` in production, a fake in tests.
    Everything the app holds lives in this call's closure; two apps share nothing.
    """
    metrics = EngineMetrics(
        model_name=spec.served_model_name, kv_capacity_tokens=step_model.kv_capacity_tokens
    )
    batcher = Batcher(
        step_model,
        max_num_seqs=spec.max_num_seqs,
        max_num_batched_tokens=token_budget(spec),
        time_scale=spec.time_scale,
        observer=metrics,
    )
    metrics.watch(batcher)
    endpoints = _Endpoints(spec, batcher, metrics, created=int(time.time()))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(batcher.run(), name=f"sim-engine {spec.served_model_name}")
        task.add_done_callback(_log_death)
        endpoints.engine_task = task
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    return Starlette(
        routes=[
            Route("/v1/chat/completions", endpoints.chat_completions, methods=["POST"]),
            Route("/v1/completions", endpoints.completions, methods=["POST"]),
            Route("/v1/models", endpoints.models, methods=["GET"]),
            Route("/health", endpoints.health, methods=["GET"]),
            Route("/metrics", endpoints.metrics, methods=["GET"]),
        ],
        exception_handlers={
            InvalidRequest: _invalid_request,
            ModelNotFound: _model_not_found,
            HTTPException: _http_exception,
        },
        middleware=[Middleware(_EngineHeader)],
        lifespan=lifespan,
    )


class _Endpoints:
    """The route handlers, bound to one engine's spec, batcher and metrics."""

    def __init__(
        self, spec: SimEngineSpec, batcher: Batcher, metrics: EngineMetrics, *, created: int
    ) -> None:
        self._spec = spec
        self._batcher = batcher
        self._metrics = metrics
        self._created = created
        self.engine_task: asyncio.Task[None] | None = None

    async def chat_completions(self, request: Request) -> Response:
        body = await self._parse(request, ChatCompletionBody)
        prepared = prepare_chat(body, seed=self._spec.seed, max_model_len=self._spec.max_model_len)
        return await self._generate(request, prepared, "chat", "chatcmpl-")

    async def completions(self, request: Request) -> Response:
        body = await self._parse(request, CompletionBody)
        prepared = prepare_completion(
            body, seed=self._spec.seed, max_model_len=self._spec.max_model_len
        )
        return await self._generate(request, prepared, "completion", "cmpl-")

    async def models(self, request: Request) -> Response:
        card = {
            "id": self._spec.served_model_name,
            "object": "model",
            "created": self._created,
            "owned_by": OWNED_BY,
            "root": self._spec.served_model_name,
            "parent": None,
            "max_model_len": self._spec.max_model_len,
        }
        return JSONResponse({"object": "list", "data": [card]})

    async def health(self, request: Request) -> Response:
        if self.engine_task is not None and self.engine_task.done():
            return _error(HTTPStatus.SERVICE_UNAVAILABLE, "The engine loop has stopped.")
        return Response(status_code=200)

    async def metrics(self, request: Request) -> Response:
        return Response(self._metrics.render(), media_type=CONTENT_TYPE)

    async def _parse(self, request: Request, model: type[_Body]) -> _Body:
        raw = await request.body()
        try:
            body = model.model_validate_json(raw)
        except pydantic.ValidationError as exc:
            raise _invalid_from(exc) from None
        if body.model is not None and body.model != self._spec.served_model_name:
            raise ModelNotFound(body.model)
        return body

    async def _generate(
        self,
        request: Request,
        prepared: PreparedRequest,
        kind: Literal["chat", "completion"],
        id_prefix: str,
    ) -> Response:
        self._batcher.check(prepared.generation)
        renderer = Renderer(
            kind=kind,
            id=id_prefix + uuid.uuid4().hex,
            created=int(time.time()),
            model=self._spec.served_model_name,
        )
        if prepared.stream:
            return StreamingResponse(
                self._stream(request.receive, prepared, renderer),
                media_type="text/event-stream",
                headers={"cache-control": "no-cache"},
            )
        stream = self._batcher.submit(prepared.generation)
        async with _abort_on_disconnect(request.receive, stream):
            produced = 0
            async for _ in stream:
                produced += 1
        if stream.finish_reason == ABORT:
            return Response(status_code=499)  # the client left; nobody reads this
        content = text.reply_text(self._spec.seed, prepared.digest, 0, produced)
        usage_ = usage(prepared.generation.prompt_tokens, produced)
        return JSONResponse(renderer.response(content, stream.finish_reason, usage_))

    async def _stream(
        self, receive: Receive, prepared: PreparedRequest, renderer: Renderer
    ) -> AsyncIterator[str]:
        # Submitted here rather than in the handler so that every submitted request is aborted
        # by ``_abort_on_disconnect`` when the client goes away, even before the first chunk.
        stream = self._batcher.submit(prepared.generation)
        async with _abort_on_disconnect(receive, stream):
            produced = 0
            async for index in stream:
                if index == 0:
                    for chunk in renderer.opening_chunks():
                        yield _sse(chunk)
                piece = text.token_text(self._spec.seed, prepared.digest, index)
                yield _sse(renderer.token_chunk(piece))
                produced += 1
            if stream.finish_reason == ABORT:
                return  # the client left: no finish reason, no [DONE]
            yield _sse(renderer.final_chunk(stream.finish_reason))
            if prepared.include_usage:
                usage_ = usage(prepared.generation.prompt_tokens, produced)
                yield _sse(renderer.usage_chunk(usage_))
            yield "data: [DONE]\n\n"


@contextlib.asynccontextmanager
async def _abort_on_disconnect(receive: Receive, stream: TokenStream) -> AsyncIterator[None]:
    """Abort ``stream`` when the client disconnects, and in any case when the block exits.

    The block exits early through cancellation too (uvicorn's graceful-shutdown timeout), so
    a request never outlives its handler.
    """
    watcher = asyncio.ensure_future(_disconnected(receive))
    watcher.add_done_callback(lambda _: stream.abort())
    try:
        yield
    finally:
        watcher.cancel()
        stream.abort()


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _sse(payload: dict[str, object]) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


def _log_death(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("sim engine loop died; /health now answers 503", exc_info=task.exception())


# -- errors ------------------------------------------------------------------------------------


def _error(
    status: HTTPStatus, message: str, *, error_type: str | None = None, param: str | None = None
) -> JSONResponse:
    envelope = {
        "message": message,
        "type": error_type or status.phrase,
        "param": param,
        "code": int(status),
    }
    return JSONResponse({"error": envelope}, status_code=int(status))


def _invalid_from(exc: pydantic.ValidationError) -> InvalidRequest:
    first = exc.errors(include_url=False)[0]
    param = ".".join(str(part) for part in first["loc"]) or None
    if first["type"] == "json_invalid":
        return InvalidRequest(f"The request body is not valid JSON: {first['msg']}")
    where = f"{param}: " if param else "request body: "
    return InvalidRequest(where + first["msg"], param=param)


async def _invalid_request(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, InvalidRequest)
    return _error(
        HTTPStatus.BAD_REQUEST, exc.message, error_type="BadRequestError", param=exc.param
    )


async def _model_not_found(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ModelNotFound)
    return _error(HTTPStatus.NOT_FOUND, exc.message, error_type="NotFoundError", param=exc.param)


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return _error(HTTPStatus(exc.status_code), str(exc.detail))


class _EngineHeader:
    """ASGI middleware adding ``x-gearshift-engine: sim`` to every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), ENGINE_HEADER]
            await send(message)

        await self._app(scope, receive, send_with_header)
