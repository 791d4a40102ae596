"""The ``gearshift`` operator CLI (typer). Thin: parse, load config, call, render.

Machine output (``-o json|yaml``) goes to stdout without colour; progress and logs go to
stderr. Errors print one line and exit non-zero (2 for bad input, 1 for failures).
"""

from __future__ import annotations

import typer

from scheduler.cli.batch_cmd import app as batch_app
from scheduler.cli.capacity_cmd import capacity
from scheduler.cli.catalog_cmd import catalog
from scheduler.cli.config_cmd import app as config_app
from scheduler.cli.dev_cmd import app as dev_app
from scheduler.cli.gateway_cmd import gateway
from scheduler.cli.inventory_cmd import inventory
from scheduler.cli.keys_cmd import app as keys_app
from scheduler.cli.node_cmd import app as node_app
from scheduler.cli.perf_cmd import perf
from scheduler.cli.plan_cmd import plan
from scheduler.cli.serve_cmd import serve
from scheduler.cli.simulate_cmd import simulate
from scheduler.cli.status_cmd import status

app = typer.Typer(
    name="gearshift",
    help="Gearshift: cost-aware LLM inference on mixed GPU fleets.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(batch_app, name="batch")
app.add_typer(config_app, name="config")
app.add_typer(dev_app, name="dev")
app.add_typer(keys_app, name="keys")
app.add_typer(node_app, name="node")
app.command("inventory")(inventory)
app.command("capacity")(capacity)
app.command("catalog")(catalog)
app.command("gateway")(gateway)
app.command("perf")(perf)
app.command("plan")(plan)
app.command("serve")(serve)
app.command("simulate")(simulate)
app.command("status")(status)


def main() -> None:
    app()
