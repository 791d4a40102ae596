"""The ``gearshift`` operator CLI (typer). Thin: parse, load config, call, render.

Machine output (``-o json|yaml``) goes to stdout without colour; progress and logs go to
stderr. Errors print one line and exit non-zero (2 for bad input, 1 for failures).
"""

from __future__ import annotations

import typer

from scheduler.cli import catalog_cmd, config_cmd, perf_cmd, serve_cmd, status_cmd

app = typer.Typer(
    name="gearshift",
    help="Gearshift: cost-aware LLM inference on mixed GPU fleets.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(config_cmd.app, name="config")
app.command("catalog")(catalog_cmd.catalog)
app.command("perf")(perf_cmd.perf)
app.command("serve")(serve_cmd.serve)
app.command("status")(status_cmd.status)


def main() -> None:
    app()
