"""The sim engine's HTTP app in-process (ASGI transport, virtual time): shapes, errors, metrics."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from nodes.engines.sim.server import create_app
from nodes.engines.sim.spec import SimEngineSpec
from nodes.models import catalog_model

pytestmark = pytest.mark.anyio

MODEL = "sim-llama"
MAX_MODEL_LEN = 2048


def make_spec(**overrides: Any) -> SimEngineSpec:
    fields: dict[str, Any] = {
        "served_model_name": MODEL,
        "architecture": catalog_model("llama-3.2-1b").architecture,
        "accelerator": "H100-SXM",
        "max_model_len": MAX_MODEL_LEN,
        "time_scale": 50.0,
    }
    return SimEngineSpec(**(fields | overrides))


@pytest.fixture
async def client(linear_steps: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(make_spec(), linear_steps())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://sim") as http:
            yield http


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": "Say something."}]} | fields


def completion(**fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "prompt": "Once upon a time"} | fields


def sse_events(body: str) -> list[str]:
    """The data payloads of an SSE body, checking the framing on the way."""
    assert body.endswith("\n\n")
    events = body.split("\n\n")[:-1]
    assert all(event.startswith("data: ") for event in events)
    return [event.removeprefix("data: ") for event in events]


# -- non-streamed -------------------------------------------------------------------------------


async def test_chat_completion_shape(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/chat/completions", json=chat(max_tokens=50))
    assert response.status_code == 200
    assert response.headers["x-gearshift-engine"] == "sim"
    body = response.json()
    assert body["id"].startswith("chatcmpl-")
    assert body["object"] == "chat.completion"
    assert body["model"] == MODEL
    assert isinstance(body["created"], int)
    [choice] = body["choices"]
    assert choice["index"] == 0
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"]
    assert choice["logprobs"] is None
    assert choice["finish_reason"] in ("stop", "length")
    usage = body["usage"]
    assert 1 <= usage["completion_tokens"] <= 50
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_completion_shape(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/completions", json=completion())
    assert response.status_code == 200
    body = response.json()
    assert body["id"].startswith("cmpl-")
    assert body["object"] == "text_completion"
    [choice] = body["choices"]
    assert choice["text"] and choice["index"] == 0 and choice["logprobs"] is None
    assert choice["finish_reason"] == "stop"  # natural length, no cap
    assert body["usage"]["prompt_tokens"] == 4  # 16 bytes at 4 bytes per token


async def test_replies_are_deterministic(client: httpx.AsyncClient) -> None:
    first = (await client.post("/v1/chat/completions", json=chat())).json()
    second = (await client.post("/v1/chat/completions", json=chat())).json()
    assert first["choices"] == second["choices"]
    assert first["id"] != second["id"]


@pytest.mark.parametrize(
    ("fields", "tokens", "finish_reason"),
    [
        ({"max_tokens": 3}, 3, "length"),
        ({"max_completion_tokens": 2, "max_tokens": 9}, 2, "length"),
        ({"max_tokens": 300, "ignore_eos": True}, 300, "length"),
    ],
    ids=["max_tokens", "max_completion_tokens-wins", "ignore_eos"],
)
async def test_output_length_limits(
    client: httpx.AsyncClient, fields: dict[str, Any], tokens: int, finish_reason: str
) -> None:
    body = (await client.post("/v1/chat/completions", json=chat(**fields))).json()
    assert body["usage"]["completion_tokens"] == tokens
    assert body["choices"][0]["finish_reason"] == finish_reason


async def test_prompt_forms(client: httpx.AsyncClient) -> None:
    token_ids = (await client.post("/v1/completions", json=completion(prompt=[1, 2, 3]))).json()
    assert token_ids["usage"]["prompt_tokens"] == 3
    in_list = await client.post("/v1/completions", json=completion(prompt=["abcdefgh"]))
    assert in_list.json()["usage"]["prompt_tokens"] == 2
    parts = chat(messages=[{"role": "user", "content": [{"type": "text", "text": "abcd"}]}])
    assert (await client.post("/v1/chat/completions", json=parts)).status_code == 200


# -- streamed -----------------------------------------------------------------------------------


async def test_streamed_chat_matches_the_whole_reply(client: httpx.AsyncClient) -> None:
    whole = (await client.post("/v1/chat/completions", json=chat())).json()
    response = await client.post(
        "/v1/chat/completions",
        json=chat(stream=True, stream_options={"include_usage": True}),
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}
    assert len({chunk["id"] for chunk in chunks}) == 1

    *choice_chunks, usage_chunk = chunks
    assert choice_chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(chunk["usage"] is None for chunk in choice_chunks)
    assert [c["choices"][0]["finish_reason"] for c in choice_chunks[:-1]] == [None] * (
        len(choice_chunks) - 1
    )
    assert choice_chunks[-1]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]
    content = "".join(c["choices"][0]["delta"].get("content", "") for c in choice_chunks)
    assert content == whole["choices"][0]["message"]["content"]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == whole["usage"]


async def test_streamed_completion_without_usage(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/completions", json=completion(max_tokens=4, stream=True))
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert {chunk["object"] for chunk in chunks} == {"text_completion"}
    assert all(chunk["choices"] and chunk["usage"] is None for chunk in chunks)
    assert [chunk["choices"][0]["finish_reason"] for chunk in chunks] == [None] * 4 + ["length"]
    assert all(chunk["choices"][0]["text"] for chunk in chunks[:4])


# -- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "payload", "param"),
    [
        ("/v1/chat/completions", b"{not json", None),
        ("/v1/chat/completions", b"[1, 2]", None),
        ("/v1/chat/completions", {"model": MODEL}, "messages"),
        ("/v1/chat/completions", {"model": MODEL, "messages": []}, "messages"),
        ("/v1/chat/completions", chat(n=2), "n"),
        ("/v1/chat/completions", chat(priority="x"), "priority"),
        ("/v1/chat/completions", chat(max_tokens=0), "max_tokens"),
        ("/v1/chat/completions", chat(max_tokens=MAX_MODEL_LEN), "max_tokens"),
        ("/v1/chat/completions",
         chat(messages=[{"role": "user", "content": "x" * 4 * MAX_MODEL_LEN}]),
         "messages"),
        ("/v1/chat/completions",
         chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]),
         "messages"),
        ("/v1/completions", completion(prompt=["one", "two"]), "prompt"),
        ("/v1/completions", completion(prompt=[]), None),
        ("/v1/completions", {"model": MODEL}, "prompt"),
    ],
    ids=[
        "bad-json", "not-an-object", "missing-messages", "no-messages", "n=2", "priority-x",
        "max_tokens-0", "context-too-long", "prompt-too-long", "image-part", "prompt-batch",
        "empty-prompt", "missing-prompt",
    ],
)
async def test_bad_requests_get_400_in_vllm_shape(
    client: httpx.AsyncClient, path: str, payload: bytes | dict[str, Any], param: str | None
) -> None:
    if isinstance(payload, bytes):
        response = await client.post(path, content=payload)
    else:
        response = await client.post(path, json=payload)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "BadRequestError"
    assert error["code"] == 400
    assert error["message"]
    if param is not None:
        assert error["param"] == param


async def test_context_length_message_names_the_numbers(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/completions", json=completion(max_tokens=MAX_MODEL_LEN))
    message = response.json()["error"]["message"]
    assert message.startswith(
        f"This model's maximum context length is {MAX_MODEL_LEN} tokens. However, you requested "
        f"{MAX_MODEL_LEN + 4} tokens"
    )


async def test_unknown_model_gets_404(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/chat/completions", json=chat(model="gpt-4o"))
    assert response.status_code == 404
    error = response.json()["error"]
    assert (error["type"], error["code"], error["param"]) == ("NotFoundError", 404, "model")


async def test_unknown_fields_are_ignored_and_model_may_be_omitted(
    client: httpx.AsyncClient,
) -> None:
    body = chat(temperature=0.2, top_p=0.9, service_tier="flex", user="u1")
    assert (await client.post("/v1/chat/completions", json=body)).status_code == 200
    del body["model"]
    assert (await client.post("/v1/chat/completions", json=body)).status_code == 200


async def test_unknown_route_and_method_use_the_error_envelope(client: httpx.AsyncClient) -> None:
    missing = await client.get("/v1/nothing")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == 404
    wrong_method = await client.get("/v1/chat/completions")
    assert wrong_method.status_code == 405 and wrong_method.json()["error"]["code"] == 405


# -- models, health, metrics --------------------------------------------------------------------


async def test_models_and_health(client: httpx.AsyncClient) -> None:
    models = (await client.get("/v1/models")).json()
    assert models["object"] == "list"
    [card] = models["data"]
    assert card["id"] == MODEL and card["object"] == "model"
    assert card["owned_by"] == "gearshift-sim" and card["max_model_len"] == MAX_MODEL_LEN
    assert isinstance(card["created"], int)
    health = await client.get("/health")
    assert health.status_code == 200 and health.headers["x-gearshift-engine"] == "sim"


async def test_metrics_use_vllm_names(client: httpx.AsyncClient) -> None:
    await client.post("/v1/chat/completions", json=chat(max_tokens=3))
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    labels = f'engine="0",model_name="{MODEL}"'
    for line in (
        f"vllm:num_requests_running{{{labels}}} 0.0",
        f"vllm:num_requests_waiting{{{labels}}} 0.0",
        f"vllm:kv_cache_usage_perc{{{labels}}} 0.0",
        f"vllm:generation_tokens_total{{{labels}}} 3.0",
        f'vllm:request_success_total{{engine="0",finished_reason="length",model_name="{MODEL}"}}'
        " 1.0",
        f"vllm:time_to_first_token_seconds_count{{{labels}}} 1.0",
        f"vllm:inter_token_latency_seconds_count{{{labels}}} 2.0",
        f"vllm:e2e_request_latency_seconds_count{{{labels}}} 1.0",
    ):
        assert line in text.splitlines()
    assert f"vllm:prompt_tokens_total{{{labels}}}" in text
    assert (
        'vllm:cache_config_info{block_size="16",engine="0",model_name="sim-llama",'
        'num_gpu_blocks="6250"} 1.0'
    ) in text
    assert "_created" not in text


async def test_metrics_show_load_and_a_disconnect_frees_it(client: httpx.AsyncClient) -> None:
    def gauge(text: str, name: str) -> float:
        [line] = [line for line in text.splitlines() if line.startswith(name + "{")]
        return float(line.rsplit(" ", 1)[1])

    long_request = asyncio.create_task(
        client.post("/v1/chat/completions", json=chat(max_tokens=1000, ignore_eos=True))
    )
    await asyncio.sleep(0.1)  # virtual; the request needs about 0.5 s at time_scale 50
    busy = (await client.get("/metrics")).text
    assert gauge(busy, "vllm:num_requests_running") == 1.0
    assert gauge(busy, "vllm:kv_cache_usage_perc") > 0.0

    long_request.cancel()  # the client goes away
    with pytest.raises(asyncio.CancelledError):
        await long_request
    idle = (await client.get("/metrics")).text
    assert gauge(idle, "vllm:num_requests_running") == 0.0
    assert gauge(idle, "vllm:kv_cache_usage_perc") == 0.0
    assert 'finished_reason="abort"' in idle


async def test_time_to_first_token_follows_the_model(linear_steps: Any) -> None:
    steps = linear_steps(prefill_fixed=0.5)
    app = create_app(make_spec(time_scale=1.0), steps)
    loop = asyncio.get_running_loop()
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://sim") as http:
            start = loop.time()
            response = await http.post("/v1/completions", json=completion(max_tokens=1))
            elapsed = loop.time() - start
    assert response.json()["usage"]["completion_tokens"] == 1
    assert elapsed == pytest.approx(steps.prefill_seconds(4))
