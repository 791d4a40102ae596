"""``gearshift status``: replicas per model × accelerator with $/h and health, and per-class
requests, TTFT, tokens and $ (admin API)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections import defaultdict
from typing import Annotated, Any

import typer
from rich.table import Table

from scheduler.cli import session_file
from scheduler.cli.output import OUTPUT_OPTION_HELP, OutputFormat, emit, fail, make_table
from scheduler.errors import ControlPlaneError


def status(
    output: Annotated[
        OutputFormat, typer.Option("--output", "-o", help=OUTPUT_OPTION_HELP)
    ] = OutputFormat.TABLE,
    admin_url: session_file.AdminUrlOption = None,
    token: session_file.TokenOption = None,
    session: session_file.SessionOption = session_file.DEFAULT_PATH,
) -> None:
    """Show what runs where, what it costs, and whether it is healthy.

    Example: gearshift status -o json
    """
    try:
        document = fetch_status(*session_file.admin_target(admin_url, token, session))
    except ControlPlaneError as exc:
        fail(str(exc))
    emit(document, output, lambda: _tables(document))


def fetch_status(admin_url: str, token: str, timeout_s: float = 5.0) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{admin_url.rstrip('/')}/admin/v1/status",
        headers={"Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            document: dict[str, Any] = json.loads(response.read())
            return document
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            raise ControlPlaneError("the admin API refused the token") from None
        raise ControlPlaneError(f"the admin API answered HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise ControlPlaneError(f"cannot reach the admin API at {admin_url}: {exc}") from None


def _tables(document: dict[str, Any]) -> list[Table]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for replica in document["replicas"]:
        groups[(replica["model"], replica["accelerator"])].append(replica)
    summary = make_table(
        f"Fleet: {len(document['replicas'])} replicas, ${document['cost_per_hour']:,.2f}/h, "
        f"{'ready' if document['ready'] else 'NOT ready'}",
        ["model", "accelerator", "replicas", "ready", "$/h", "health"],
        [
            (
                model,
                accelerator,
                len(replicas),
                sum(1 for r in replicas if r["state"] == "ready"),
                sum(r["price_per_hour"] for r in replicas),
                "ok" if all(r["state"] == "ready" for r in replicas) else _worst(replicas),
            )
            for (model, accelerator), replicas in sorted(groups.items())
        ],
    )
    detail = make_table(
        "Replicas",
        ["replica", "node", "TP", "state", "running", "waiting", "KV", "restarts", "detail"],
        [
            (
                r["replica_id"],
                r["node_id"],
                r["tensor_parallel"],
                r["state"],
                r["load"]["running"],
                r["load"]["waiting"],
                f"{r['load']['kv_usage']:.0%}",
                r["restarts"],
                r["detail"] or "",
            )
            for r in document["replicas"]
        ],
    )
    tables = [summary, detail]
    if document.get("demand"):
        tables.append(
            make_table(
                "Demand (req/s)",
                ["model", "class", "demand", "planned capacity"],
                [
                    (d["model"], d["class"], d["demand_per_s"], d["planned_per_s"])
                    for d in document["demand"]
                ],
            )
        )
    if document.get("classes"):
        tables.append(_class_table(document["classes"]))
    if document["unplaced"]:
        tables.append(
            make_table(
                "Not placed",
                ["model", "verdict", "reason"],
                [(u["model"], u["verdict"], u["reason"]) for u in document["unplaced"]],
            )
        )
    return tables


def _class_table(classes: list[dict[str, Any]]) -> Table:
    """What the gateway served per traffic class since it started (TTFT: streamed requests)."""
    return make_table(
        "Traffic classes (since the gateway started)",
        ["class", "requests", "TTFT p50", "TTFT p99", "prompt tok", "completion tok", "$"],
        [
            (
                c["class"],
                int(c["requests"]),
                _seconds(c["ttft_p50_s"]),
                _seconds(c["ttft_p99_s"]),
                int(c["prompt_tokens"]),
                int(c["completion_tokens"]),
                f"{c['spent_dollars']:.4f}",
            )
            for c in classes
        ],
    )


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def _worst(replicas: list[dict[str, Any]]) -> str:
    states = {r["state"] for r in replicas}
    return next(s for s in ("failed", "starting", "draining", "ready") if s in states)
