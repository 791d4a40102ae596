"""Rendering CLI results: a rich table for people, JSON or YAML for programs.

``emit`` writes to stdout; ``console_err`` is for progress and logs; ``fail`` prints one line
to stderr and exits with the given code.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

console_out = Console(highlight=False)
console_err = Console(stderr=True, highlight=False)


class OutputFormat(enum.StrEnum):
    TABLE = "table"
    JSON = "json"
    YAML = "yaml"


OUTPUT_OPTION_HELP = "Output format: table, json or yaml."


def emit(data: Any, fmt: OutputFormat, table: Callable[[], Table | Sequence[Table]]) -> None:
    """Print ``data`` as JSON/YAML, or the tables ``table()`` builds."""
    if fmt is OutputFormat.JSON:
        typer.echo(json.dumps(data, indent=2, sort_keys=False, default=str))
    elif fmt is OutputFormat.YAML:
        typer.echo(yaml.safe_dump(data, sort_keys=False).rstrip())
    else:
        built = table()
        for item in built if isinstance(built, Sequence) else [built]:
            console_out.print(item)


def make_table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Table:
    """A table whose numeric-looking columns are right-aligned."""
    table = Table(title=title, title_justify="left", header_style="bold")
    for index, column in enumerate(columns):
        numeric = bool(rows) and all(
            isinstance(row[index], int | float) and not isinstance(row[index], bool) for row in rows
        )
        table.add_column(column, justify="right" if numeric else "left")
    for row in rows:
        table.add_row(*(_cell(value) for value in row))
    return table


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def fail(message: str, code: int = 1) -> NoReturn:
    """One line on stderr, then exit ``code`` (2: bad input, 1: the operation failed).

    ``message`` is plain text: brackets in it (paths, lists) are printed, not read as markup.
    """
    console_err.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)
