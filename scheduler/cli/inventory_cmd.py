"""``gearshift inventory``: nodes, accelerators, free memory, $/h, ownership and health."""

from __future__ import annotations

from typing import Annotated

import typer

from scheduler.cli import session_file
from scheduler.cli.output import OUTPUT_OPTION_HELP, OutputFormat, emit, fail, make_table
from scheduler.cli.status_cmd import fetch_status
from scheduler.errors import ControlPlaneError


def inventory(
    output: Annotated[
        OutputFormat, typer.Option("--output", "-o", help=OUTPUT_OPTION_HELP)
    ] = OutputFormat.TABLE,
    admin_url: session_file.AdminUrlOption = None,
    token: session_file.TokenOption = None,
    session: session_file.SessionOption = session_file.DEFAULT_PATH,
) -> None:
    """List the cluster's nodes as the controller sees them.

    Example: gearshift inventory -o yaml
    """
    try:
        nodes = fetch_status(*session_file.admin_target(admin_url, token, session))["nodes"]
    except ControlPlaneError as exc:
        fail(str(exc))
    emit(
        nodes,
        output,
        lambda: make_table(
            f"Inventory: {len(nodes)} nodes, ${sum(n['price_per_hour'] for n in nodes):,.2f}/h",
            ["node", "group", "accelerator", "count", "free", "free GiB", "$/h", "ownership",
             "health", "labels"],
            [
                (n["node_id"], n["group"], n["accelerator"], n["accelerator_count"],
                 n["accelerator_count"] - n["accelerators_used"], n["free_memory_gib"],
                 n["price_per_hour"], n["ownership"], "ok" if n["alive"] else "down",
                 ", ".join(f"{k}={v}" for k, v in sorted(n["labels"].items())))
                for n in nodes
            ],
        ),
    )  # fmt: skip
