"""API keys through the real gateway app (Starlette TestClient, a recording proxy): refused
keys never reach an engine, tiers are downgraded to what the key may use (and say so), RPM/TPM
limits answer 429 with OpenAI's headers, revocation holds within a second, and no issued key
shows up in the key file, the logs, /metrics or `gearshift keys ls`."""

from __future__ import annotations

import asyncio
import json
import logging
import random
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from starlette.responses import JSONResponse, Response
from starlette.testclient import TestClient
from typer.testing import CliRunner

from scheduler.cli import app as cli
from scheduler.cli.serve_cmd import announce_auth
from scheduler.config import AuthConfig, demo_config
from scheduler.gateway.admin import create_admin_app
from scheduler.gateway.app import GatewayDeps, create_app
from scheduler.gateway.auth import DOWNGRADE_HEADER, GatewayAuth, duration
from scheduler.gateway.endpoints import EndpointTable, StaticFleetState
from scheduler.gateway.metrics import GatewayMetrics
from scheduler.gateway.proxy import EngineProxy, OutcomeHook
from scheduler.placement.demand import DemandTracker
from scheduler.plugins import PluginRegistry
from scheduler.routing.profiles import build_profiles
from scheduler.state import FleetState
from scheduler.tenants import OPEN_TENANT, KeyFile, parse_key
from scheduler.types import TrafficClass

pytestmark = pytest.mark.timeout(60)

MODEL = "m"
RATE_HEADERS = [
    f"x-ratelimit-{what}-{name}"
    for name in ("requests", "tokens")
    for what in ("limit", "remaining", "reset")
]


class RecordingProxy(EngineProxy):
    """Remembers the tier of every request it is handed; answers 200 with that tier."""

    def __init__(self) -> None:
        self.tiers: list[str] = []

    async def forward(
        self,
        picks: Any,
        path: str,
        body: dict[str, Any],
        *,
        stream: bool,
        tier: str,
        request_id: str,
        on_outcome: OutcomeHook,
        traffic_class: object = None,
    ) -> Response:
        self.tiers.append(tier)
        return JSONResponse({"object": "text_completion", "service_tier": tier, "choices": []})


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Gateway:
    def __init__(self, make_endpoint: Any, keys_file: Path, clock: FakeClock) -> None:
        config = demo_config()
        state = FleetState(
            version=1, endpoints=(make_endpoint("r1", model=MODEL),), models=(MODEL,)
        )
        self.table = EndpointTable(StaticFleetState(state))

        async def refresh() -> None:
            async with aiohttp.ClientSession() as session:
                await self.table.refresh(session, timeout_s=1.0)

        asyncio.run(refresh())
        self.proxy = RecordingProxy()
        self.auth = GatewayAuth.from_config(AuthConfig(keys_file=str(keys_file)), clock=clock)
        deps = GatewayDeps(
            gateway=config.gateway,
            classes=config.traffic_classes,
            profiles=build_profiles(PluginRegistry.from_entry_points(), config.routing),
            table=self.table,
            proxy=self.proxy,
            metrics=GatewayMetrics(),
            rng=random.Random(0),
            demand=DemandTracker(60.0),
            auth=self.auth,
        )
        self.client = TestClient(create_app(deps))

    def post(self, key: str | None, tier: str | None = None, max_tokens: int = 4) -> Any:
        body: dict[str, Any] = {"model": MODEL, "prompt": "hi", "max_tokens": max_tokens}
        if tier is not None:
            body["service_tier"] = tier
        headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
        return self.client.post("/v1/completions", json=body, headers=headers)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def keys(tmp_path: Path) -> KeyFile:
    return KeyFile(tmp_path / "keys.json")


def _key(keys: KeyFile, classes: set[TrafficClass], default: TrafficClass, **limit: int) -> str:
    return keys.create(
        tenant="acme",
        classes=frozenset(classes),
        default_class=default,
        rpm=limit.get("rpm"),
        tpm=limit.get("tpm"),
    ).plaintext


def test_refused_keys_get_401_and_never_reach_an_engine(
    make_endpoint: Any, keys: KeyFile, clock: FakeClock
) -> None:
    good = _key(keys, set(TrafficClass), TrafficClass.STANDARD)
    revoked = _key(keys, set(TrafficClass), TrafficClass.STANDARD)
    keys.revoke((parse_key(revoked) or ("", ""))[0])
    key_id, secret = parse_key(good) or ("", "")
    gateway = Gateway(make_endpoint, keys.path, clock)
    wrong_secret = f"gs-{key_id}-{'0' * 48}"
    unknown_id = f"gs-{'0' * 12}-{secret}"
    for headers in (
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer "},
        {"Authorization": f"Basic {good}"},
        {"Authorization": "Bearer not-a-key"},
        {"Authorization": f"Bearer {wrong_secret}"},
        {"Authorization": f"Bearer {unknown_id}"},
        {"Authorization": f"Bearer {revoked}"},
    ):
        for method, path in (
            ("POST", "/v1/completions"),
            ("POST", "/v1/chat/completions"),
            ("GET", "/v1/models"),
            ("GET", f"/v1/models/{MODEL}"),
        ):
            response = gateway.client.request(
                method, path, headers=headers, json={"model": MODEL, "prompt": "x"}
            )
            assert response.status_code == 401, (headers, path, response.text)
            error = response.json()["error"]
            assert error["code"] == "invalid_api_key" and set(error) == {
                "message",
                "type",
                "param",
                "code",
            }
    assert gateway.proxy.tiers == [], "no refused request reached an engine"
    assert gateway.post(good).status_code == 200
    assert gateway.client.get("/v1/models", headers={"Authorization": f"Bearer {good}"}).json()[
        "data"
    ]
    for path in ("/health", "/ready", "/metrics"):
        assert gateway.client.get(path).status_code in (200, 503), path


@pytest.mark.parametrize(
    ("classes", "default", "asked", "used", "downgrade"),
    [
        (
            {TrafficClass.STANDARD, TrafficClass.BATCH},
            TrafficClass.STANDARD,
            "priority",
            "default",
            "priority->default",
        ),
        ({TrafficClass.BATCH}, TrafficClass.BATCH, "priority", "flex", "priority->flex"),
        ({TrafficClass.BATCH}, TrafficClass.BATCH, "default", "flex", "default->flex"),
        (set(TrafficClass), TrafficClass.STANDARD, "priority", "priority", None),
        ({TrafficClass.STANDARD, TrafficClass.BATCH}, TrafficClass.BATCH, None, "flex", None),
        ({TrafficClass.STANDARD, TrafficClass.BATCH}, TrafficClass.BATCH, "auto", "flex", None),
        ({TrafficClass.INTERACTIVE}, TrafficClass.INTERACTIVE, None, "priority", None),
    ],
)
def test_a_tier_the_key_may_not_use_is_downgraded_and_reported(
    make_endpoint: Any,
    keys: KeyFile,
    clock: FakeClock,
    classes: set[TrafficClass],
    default: TrafficClass,
    asked: str | None,
    used: str,
    downgrade: str | None,
) -> None:
    key = _key(keys, classes, default)
    gateway = Gateway(make_endpoint, keys.path, clock)
    response = gateway.post(key, asked)
    assert response.status_code == 200, response.text
    assert gateway.proxy.tiers == [used]
    assert response.json()["service_tier"] == used
    assert response.headers.get(DOWNGRADE_HEADER) == downgrade


def test_a_key_is_never_upgraded_past_its_request(
    make_endpoint: Any, keys: KeyFile, clock: FakeClock
) -> None:
    key = _key(keys, {TrafficClass.INTERACTIVE}, TrafficClass.INTERACTIVE)
    gateway = Gateway(make_endpoint, keys.path, clock)
    for tier in ("default", "flex"):
        response = gateway.post(key, tier)
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "tier_not_allowed"
    assert gateway.proxy.tiers == []


def test_over_the_rpm_limit_is_429_with_every_header_and_other_keys_are_unaffected(
    make_endpoint: Any, keys: KeyFile, clock: FakeClock
) -> None:
    limited = _key(keys, set(TrafficClass), TrafficClass.STANDARD, rpm=3, tpm=1000)
    other = _key(keys, set(TrafficClass), TrafficClass.STANDARD, rpm=3, tpm=1000)
    gateway = Gateway(make_endpoint, keys.path, clock)
    remaining = []
    for _ in range(3):
        ok = gateway.post(limited, max_tokens=10)
        assert ok.status_code == 200
        assert all(name in ok.headers for name in RATE_HEADERS), ok.headers
        assert ok.headers["x-ratelimit-limit-requests"] == "3"
        assert ok.headers["x-ratelimit-limit-tokens"] == "1000"
        remaining.append(int(ok.headers["x-ratelimit-remaining-requests"]))
    assert remaining == [2, 1, 0]
    refused = gateway.post(limited, max_tokens=10)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert refused.headers["retry-after"] == "20"
    assert all(name in refused.headers for name in RATE_HEADERS)
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert refused.headers["x-ratelimit-reset-requests"] == "1m0s"
    assert len(gateway.proxy.tiers) == 3, "the refused request reached no engine"
    assert gateway.post(other).status_code == 200
    clock.now += 20.0
    assert gateway.post(limited, max_tokens=10).status_code == 200


def test_over_the_tpm_limit_is_429(make_endpoint: Any, keys: KeyFile, clock: FakeClock) -> None:
    key = _key(keys, set(TrafficClass), TrafficClass.STANDARD, tpm=100)
    gateway = Gateway(make_endpoint, keys.path, clock)
    first = gateway.post(key, max_tokens=60)
    assert first.status_code == 200
    assert "x-ratelimit-limit-requests" not in first.headers, "no RPM limit, no RPM headers"
    assert int(first.headers["x-ratelimit-remaining-tokens"]) < 40
    refused = gateway.post(key, max_tokens=60)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert int(refused.headers["retry-after"]) >= 1


def test_revocation_takes_effect_within_a_second(
    make_endpoint: Any, keys: KeyFile, clock: FakeClock
) -> None:
    key = _key(keys, set(TrafficClass), TrafficClass.STANDARD)
    gateway = Gateway(make_endpoint, keys.path, clock)
    assert gateway.post(key).status_code == 200
    keys.revoke((parse_key(key) or ("", ""))[0])
    clock.now += 1.01
    assert gateway.post(key).status_code == 401
    assert len(gateway.proxy.tiers) == 1


def test_without_a_key_file_the_gateway_is_open(
    make_endpoint: Any, tmp_path: Path, clock: FakeClock
) -> None:
    gateway = Gateway(make_endpoint, tmp_path / "absent.json", clock)
    assert not gateway.auth.enabled
    response = gateway.post(None, "priority")
    assert response.status_code == 200
    assert gateway.proxy.tiers == ["priority"]
    assert not any(name.startswith("x-ratelimit") for name in response.headers)


def test_the_admin_api_refuses_a_data_plane_key(
    make_endpoint: Any, keys: KeyFile, clock: FakeClock
) -> None:
    key = _key(keys, set(TrafficClass), TrafficClass.STANDARD)
    gateway = Gateway(make_endpoint, keys.path, clock)
    admin = TestClient(create_admin_app(gateway.table, "admin-token-0123456789"))
    refused = admin.get("/admin/v1/status", headers={"Authorization": f"Bearer {key}"})
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "invalid_api_key"
    allowed = admin.get(
        "/admin/v1/status", headers={"Authorization": "Bearer admin-token-0123456789"}
    )
    assert allowed.status_code == 200


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0s"), (0.25, "250ms"), (1.2, "2s"), (59.5, "1m0s"), (61, "1m1s")]
)
def test_reset_durations_read_like_openais(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_serve_warns_loudly_when_auth_is_off(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = demo_config()
    for auth in (
        AuthConfig(keys_file=str(tmp_path / "absent.json")),
        AuthConfig(enabled=False),
    ):
        gateway = config.gateway.model_copy(update={"auth": auth})
        announce_auth(config.model_copy(update={"gateway": gateway}), "http://127.0.0.1:8000")
        assert "WARNING: authentication is OFF" in capsys.readouterr().err
    (tmp_path / "keys.json").write_text('{"version": 1, "keys": []}')
    gateway = config.gateway.model_copy(
        update={"auth": AuthConfig(keys_file=str(tmp_path / "keys.json"))}
    )
    announce_auth(config.model_copy(update={"gateway": gateway}), "http://127.0.0.1:8000")
    err = capsys.readouterr().err
    assert "WARNING" not in err and "API keys required" in err


def test_no_issued_key_appears_in_the_file_logs_metrics_or_listing(
    make_endpoint: Any, tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    keys_file = tmp_path / "keys.json"
    runner = CliRunner()
    issued = []
    for tenant, extra in (("a", []), ("b", ["--rpm", "1"]), ("c", ["--classes", "batch"])):
        result = runner.invoke(
            cli, ["keys", "create", "--tenant", tenant, "--keys-file", str(keys_file), *extra]
        )
        assert result.exit_code == 0, result.output
        issued.append(result.stdout.strip().splitlines()[0])
    assert all(parse_key(key) for key in issued)
    caplog.set_level(logging.DEBUG)
    gateway = Gateway(make_endpoint, keys_file, clock)
    for key in issued:
        for tier in ("priority", "default", None):
            gateway.post(key, tier)
        gateway.post(key[:-1] + "0")  # a wrong secret for a real id
    revoke_id = (parse_key(issued[0]) or ("", ""))[0]
    assert (
        runner.invoke(cli, ["keys", "revoke", revoke_id, "--keys-file", str(keys_file)]).exit_code
        == 0
    )
    clock.now += 2
    assert gateway.post(issued[0]).status_code == 401
    assert len(gateway.proxy.tiers) >= 5
    listings = [
        runner.invoke(cli, ["keys", "ls", "--keys-file", str(keys_file), "-o", fmt]).output
        for fmt in ("table", "json", "yaml")
    ]
    assert json.loads(listings[1])[0]["revoked"] is True
    haystacks = {
        "key file": keys_file.read_text(),
        "logs": caplog.text,
        "metrics": gateway.client.get("/metrics").text,
        **{f"ls {i}": text for i, text in enumerate(listings)},
    }
    for key in issued:
        secret = (parse_key(key) or ("", ""))[1]
        for where, text in haystacks.items():
            assert key not in text and secret not in text, f"a key leaked into the {where}"


def test_admission_queues_each_request_under_its_keys_tenant(
    make_endpoint: Any, keys: KeyFile, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fair queue within a class (``AdmissionPolicy``) shares out by tenant: the gateway
    must hand it the key's tenant, and an open gateway its one shared tenant."""
    from scheduler.gateway.admission import AdmissionGate

    seen: list[str] = []
    admit = AdmissionGate.admit

    async def recording(self: AdmissionGate, *args: Any, tenant: str = "", **kw: Any) -> Any:
        seen.append(tenant)
        return await admit(self, *args, tenant=tenant, **kw)

    monkeypatch.setattr(AdmissionGate, "admit", recording)
    key = _key(keys, set(TrafficClass), TrafficClass.BATCH)
    assert Gateway(make_endpoint, keys.path, clock).post(key).status_code == 200
    open_gateway = Gateway(make_endpoint, keys.path.parent / "absent.json", clock)
    assert open_gateway.post(None).status_code == 200
    assert seen == ["acme", OPEN_TENANT]
