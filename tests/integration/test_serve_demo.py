"""The README's main command, end to end: `gearshift serve` with the built-in demo fleet on a
real multi-node Ray cluster on loopback, used through the official `openai` SDK."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from nodes.accelerators import accelerator
from nodes.models import catalog_model
from nodes.performance import replica_performance
from scheduler.config import demo_config
from tests.integration.serve_process import (
    GEARSHIFT,
    ServeProcess,
    descendants,
    start_serve,
    survivors,
)

pytestmark = [pytest.mark.ray, pytest.mark.e2e, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    process = start_serve(tmp_path_factory.mktemp("demo"))
    started: dict[int, str] = {}
    try:
        started = descendants(process.process.pid)
        engines = {r["engine_pid"] for r in process.status()["replicas"]}
        assert engines <= started.keys(), "engines must run below the serve process"
        yield process
    finally:
        code = process.stop()
        assert code == 0, process.output()
        # Ctrl-C stops everything serve started: Ray's processes, replica actors, engines.
        left = survivors(started)
        assert not left, f"processes outlived gearshift serve: {left}"


@pytest.fixture(scope="module")
def client(serve: ServeProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{serve.base_url}/v1", api_key="unused", max_retries=0)


def _replicas(serve: ServeProcess, model: str) -> list[dict[str, Any]]:
    return [r for r in serve.status()["replicas"] if r["model"] == model]


def test_every_demo_replica_is_ready_and_placed_where_planned(serve: ServeProcess) -> None:
    status = serve.status()
    config = demo_config()
    assert status["ready"]
    assert len(status["replicas"]) == sum(model.replicas for model in config.models)
    for replica in status["replicas"]:
        assert replica["state"] == "ready"
        assert replica["placed_on"] == replica["node_id"], replica
    models = {r["model"]: r["accelerator"] for r in status["replicas"]}
    assert set(models) == {model.name for model in config.models}


def test_models_are_listed(client: openai.OpenAI) -> None:
    assert {model.id for model in client.models.list()} == {
        model.name for model in demo_config().models
    }


def test_chat_completion(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(
        model="llama-3.1-8b",
        messages=[{"role": "user", "content": "Say something."}],
        max_tokens=12,
    )
    assert response.choices[0].message.content
    assert response.usage is not None and response.usage.completion_tokens == 12
    assert response.service_tier == "default"


def test_streamed_chat_completion(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="qwen2.5-0.5b",
        messages=[{"role": "user", "content": "Stream please."}],
        max_tokens=10,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 10
    assert {c.service_tier for c in chunks} == {"default"}


def _fastest(model: str, types: set[str]) -> str:
    architecture = catalog_model(model).architecture
    speed = {
        name: replica_performance(
            architecture, catalog_model(model).default_dtype, accelerator(name)
        ).decode_tokens_per_second(1, 1024)
        for name in types
    }
    return max(speed, key=lambda name: speed[name])


@pytest.mark.parametrize("model", ["llama-3.1-8b", "qwen2.5-0.5b"])
def test_priority_rides_the_fastest_card_and_flex_the_cheapest(
    serve: ServeProcess, client: openai.OpenAI, model: str
) -> None:
    replicas = _replicas(serve, model)
    types = {r["accelerator"] for r in replicas}
    assert len(types) >= 2, "the demo must give each model a choice of accelerator types"
    price = {r["accelerator"]: r["price_per_hour"] for r in replicas}
    cheapest = min(price, key=lambda name: price[name])
    for tier, expected in (("priority", _fastest(model, types)), ("flex", cheapest)):
        raw = client.chat.completions.with_raw_response.create(
            model=model,
            messages=[{"role": "user", "content": "Which card am I on?"}],
            max_tokens=4,
            service_tier=tier,  # type: ignore[arg-type]
        )
        assert raw.headers["x-gearshift-accelerator"] == expected, (tier, types)
        assert raw.headers["x-gearshift-replica"].startswith(model)
        assert raw.parse().service_tier == tier


def test_bad_input_gets_openai_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "hi"}]
        )
    assert missing.value.body["code"] == "model_not_found"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(
            model="llama-3.1-8b",
            messages=[{"role": "user", "content": "hi"}],
            temperature=7,
        )
    assert bad.value.body["param"] == "temperature"  # type: ignore[index]


def test_status_command_reads_the_admin_api(serve: ServeProcess, tmp_path: Path) -> None:
    result = subprocess.run(
        [str(GEARSHIFT), "status", "-o", "json", "--session-file", str(serve.session_file)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["ready"] is True
    assert document["cost_per_hour"] == pytest.approx(
        sum(r["price_per_hour"] for r in document["replicas"])
    )
    wrong = subprocess.run(
        [str(GEARSHIFT), "status", "--admin-url", serve.session["admin_url"], "--token", "x" * 20],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert wrong.returncode == 1
    assert "refused the token" in wrong.stderr


def test_admin_api_is_not_on_the_public_port(serve: ServeProcess) -> None:
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(f"{serve.base_url}/admin/v1/status", timeout=10)
    assert error.value.code == 404
