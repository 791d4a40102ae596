"""``gearshift config``: validate a config file, print the config schema, print the demo fleet.

``validate`` exits 0 with a summary for a valid file and 2, one line per bad field on stderr, for
an invalid or unreadable one.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from scheduler.cli.output import OUTPUT_OPTION_HELP, OutputFormat, emit, fail, make_table
from scheduler.config import GearshiftConfig, config_schema, demo_config_text, load_config
from scheduler.errors import ConfigError

app = typer.Typer(
    help="Check a config file, print the config schema, or print the demo fleet to start from.",
    no_args_is_help=True,
)


class SchemaFormat(enum.StrEnum):
    """Formats a schema can be printed in (a table would not help)."""

    JSON = "json"
    YAML = "yaml"


@app.command("validate")
def validate(
    file: Annotated[Path, typer.Argument(help="The YAML config file to check.")],
    output: Annotated[
        OutputFormat, typer.Option("--output", "-o", help=OUTPUT_OPTION_HELP)
    ] = OutputFormat.TABLE,
) -> None:
    """Check a config file and summarise the fleet and models it describes.

    Exits 0 when the file is valid.

    Exits 2 when it cannot be read or is invalid, with one line per bad field on stderr.

    Models that name an hf_config have that file read too.

    Example: gearshift config validate fleet.yaml -o json
    """
    try:
        config = load_config(file)
    except ConfigError as exc:
        fail(str(exc), code=2)
    problems = _unreadable_architectures(config)
    if problems:
        lines = [f"{file}: {len(problems)} invalid field(s)", *(f"  {p}" for p in problems)]
        fail("\n".join(lines), code=2)
    summary = config_summary(config, source=str(file))
    emit(summary, output, lambda: _summary_tables(summary))


@app.command("schema")
def schema(
    output: Annotated[
        SchemaFormat, typer.Option("--output", "-o", help="Output format: json or yaml.")
    ] = SchemaFormat.JSON,
) -> None:
    """Print the JSON schema of the config file (for editors and CI checks).

    Example: gearshift config schema > gearshift.schema.json
    """
    emit(config_schema(), OutputFormat(output.value), lambda: ())


@app.command("demo")
def demo() -> None:
    """Print the built-in demo fleet as YAML, a starting point to copy and edit.

    Example: gearshift config demo > fleet.yaml && gearshift config validate fleet.yaml
    """
    try:
        text = demo_config_text()
    except OSError as exc:
        fail(f"the built-in demo fleet is missing from this installation: {exc}", code=1)
    typer.echo(text, nl=not text.endswith("\n"))


def config_summary(config: GearshiftConfig, *, source: str) -> dict[str, Any]:
    """A JSON-ready summary: totals, accelerator counts, node groups and models."""
    groups = [
        {
            "name": group.name,
            "accelerator": group.accelerator,
            "accelerators_per_node": group.accelerators_per_node,
            "nodes": group.nodes,
            "ownership": group.ownership.value,
            "price_per_node_hour": group.node_price_per_hour(),
            "price_per_hour": group.node_price_per_hour() * group.nodes,
        }
        for group in config.fleet.node_groups
    ]
    accelerators: dict[str, int] = {}
    for group in config.fleet.node_groups:
        count = group.accelerators_per_node * group.nodes
        accelerators[group.accelerator] = accelerators.get(group.accelerator, 0) + count
    models = [
        {
            "name": model.name,
            "source": _architecture_source(model.catalog, model.hf_config, model.architecture),
            "dtype": model.dtype.value,
            "engine": model.engine.value,
            "replicas": model.replicas,
            "accelerators": list(model.accelerators),
            "tensor_parallel": model.tensor_parallel,
            "max_context": model.max_context,
        }
        for model in config.models
    ]
    return {
        "file": source,
        "valid": True,
        "totals": {
            "node_groups": len(groups),
            "nodes": sum(group.nodes for group in config.fleet.node_groups),
            "accelerators": sum(accelerators.values()),
            "models": len(models),
            "replicas": sum(model.replicas for model in config.models),
            "fleet_price_per_hour": sum(float(group["price_per_hour"]) for group in groups),
        },
        "accelerators": accelerators,
        "node_groups": groups,
        "models": models,
    }


def _architecture_source(catalog: str | None, hf_config: str | None, architecture: object) -> str:
    if hf_config is not None:
        return f"hf_config {hf_config}"
    if architecture is not None:
        return "architecture"
    return f"catalog {catalog}" if catalog is not None else "catalog"


def _unreadable_architectures(config: GearshiftConfig) -> list[str]:
    """``models.N.hf_config: reason`` for each model whose Hugging Face config cannot be read."""
    problems = []
    for index, model in enumerate(config.models):
        if model.hf_config is None:
            continue
        try:
            _ = model.resolved_architecture
        except ConfigError as exc:
            problems.append(f"models.{index}.hf_config: {exc}")
    return problems


def _summary_tables(summary: dict[str, Any]) -> list[Table]:
    totals = summary["totals"]
    headline = make_table(
        f"{escape(summary['file'])}: valid",
        ["node groups", "nodes", "accelerators", "models", "replicas", "fleet $/h"],
        [
            [
                totals["node_groups"],
                totals["nodes"],
                totals["accelerators"],
                totals["models"],
                totals["replicas"],
                totals["fleet_price_per_hour"],
            ]
        ],
    )
    tables = [headline]
    if summary["node_groups"]:
        tables.append(
            make_table(
                "node groups",
                ["group", "accelerator", "per node", "nodes", "ownership", "$/node-h", "$/h"],
                [
                    [
                        g["name"],
                        g["accelerator"],
                        g["accelerators_per_node"],
                        g["nodes"],
                        g["ownership"],
                        g["price_per_node_hour"],
                        g["price_per_hour"],
                    ]
                    for g in summary["node_groups"]
                ],
            )
        )
    if summary["models"]:
        tables.append(
            make_table(
                "models",
                ["model", "architecture", "dtype", "engine", "replicas", "accelerators", "TP"],
                [
                    [
                        m["name"],
                        escape(m["source"]),
                        m["dtype"],
                        m["engine"],
                        m["replicas"],
                        ", ".join(m["accelerators"]) or "any that fits",
                        m["tensor_parallel"] if m["tensor_parallel"] is not None else "auto",
                    ]
                    for m in summary["models"]
                ],
            )
        )
    return tables
