"""``gearshift keys create|ls|revoke``: API keys for the public endpoint.

The key file holds salted hashes only; ``create`` prints the key once (stdout: the key alone,
so ``KEY=$(gearshift keys create --tenant t)`` works) and it cannot be shown again. A running
``gearshift serve`` picks up a new or revoked key within a second.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import typer

from scheduler.cli.output import (
    OUTPUT_OPTION_HELP,
    OutputFormat,
    console_err,
    emit,
    fail,
    make_table,
)
from scheduler.errors import ConfigError
from scheduler.tenants import ApiKey, KeyFile, default_keys_path
from scheduler.tenants.policy import RANK
from scheduler.types import TrafficClass

app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)

_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

KeysFileOption = Annotated[
    Path | None,
    typer.Option(
        "--keys-file", help="The key file (default: gateway.auth.keys_file, ~/.gearshift)."
    ),
]


@app.command("create")
def create(
    tenant: Annotated[str, typer.Option(help="Who the key belongs to (letters, digits, ._-).")],
    classes: Annotated[
        str, typer.Option(help="Classes the key may use, comma-separated.")
    ] = "standard,batch",
    default_class: Annotated[
        str | None,
        typer.Option(
            help="Class of a request with no service_tier (default: standard if "
            "allowed, else the best allowed)."
        ),
    ] = None,
    rpm: Annotated[
        int | None, typer.Option(min=1, help="Requests per minute (default: unlimited).")
    ] = None,
    tpm: Annotated[
        int | None,
        typer.Option(min=1, help="Tokens (prompt + max_tokens) per minute (default: unlimited)."),
    ] = None,
    keys_file: KeysFileOption = None,
    output: Annotated[
        OutputFormat, typer.Option("--output", "-o", help=OUTPUT_OPTION_HELP)
    ] = OutputFormat.TABLE,
) -> None:
    """Issue a key and print it once.

    Example: gearshift keys create --tenant acme --classes interactive,standard --rpm 600
    """
    if not _TENANT.match(tenant):
        fail(f"bad tenant {tenant!r}: use 1-64 letters, digits, '.', '_' or '-'", code=2)
    allowed = _classes(classes)
    default = _default_class(default_class, allowed)
    path = keys_file or default_keys_path()
    try:
        issued = KeyFile(path).create(
            tenant=tenant, classes=allowed, default_class=default, rpm=rpm, tpm=tpm
        )
    except ConfigError as exc:
        fail(str(exc), code=2)
    except OSError as exc:
        fail(f"cannot write the key file {path}: {exc.strerror or exc}")
    record = issued.record
    if output is OutputFormat.TABLE:
        typer.echo(issued.plaintext)
        console_err.print(
            f"Created key {record.key_id} for tenant {tenant} in {path}. The key above is shown "
            "once: store it now. Use it as `Authorization: Bearer <key>`.",
            soft_wrap=True,
            markup=False,
        )
        return
    emit({**_row(record), "key": issued.plaintext}, output, lambda: make_table(None, [], []))


@app.command("ls")
def ls(
    keys_file: KeysFileOption = None,
    output: Annotated[
        OutputFormat, typer.Option("--output", "-o", help=OUTPUT_OPTION_HELP)
    ] = OutputFormat.TABLE,
) -> None:
    """List keys: id, tenant, classes, limits, created, revoked (never a key or hash)."""
    path = keys_file or default_keys_path()
    try:
        records = list(KeyFile(path).load().keys.values())
    except ConfigError as exc:
        fail(str(exc), code=2)
    rows = [_row(record) for record in records]
    columns = ["id", "tenant", "classes", "default_class", "rpm", "tpm", "created_at", "revoked"]
    emit(
        rows,
        output,
        lambda: make_table(
            f"{len(rows)} keys in {path}",
            columns,
            [
                [",".join(row["classes"]) if c == "classes" else row[c] for c in columns]
                for row in rows
            ],
        ),
    )


@app.command("revoke")
def revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (from `gearshift keys ls`).")],
    keys_file: KeysFileOption = None,
) -> None:
    """Revoke a key; a running gateway refuses it within about a second."""
    path = keys_file or default_keys_path()
    try:
        record = KeyFile(path).revoke(key_id)
    except KeyError:
        fail(f"no key with id {key_id!r} in {path}", code=2)
    except ConfigError as exc:
        fail(str(exc), code=2)
    except OSError as exc:
        fail(f"cannot write the key file {path}: {exc.strerror or exc}")
    console_err.print(f"Revoked key {record.key_id} of tenant {record.tenant}.", markup=False)


def _classes(text: str) -> frozenset[TrafficClass]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    valid = ", ".join(c.value for c in TrafficClass)
    if not names:
        fail(f"--classes is empty: name one or more of {valid}", code=2)
    try:
        return frozenset(TrafficClass(name) for name in names)
    except ValueError:
        fail(f"bad --classes {text!r}: use one or more of {valid}", code=2)


def _default_class(name: str | None, allowed: frozenset[TrafficClass]) -> TrafficClass:
    if name is None:
        if TrafficClass.STANDARD in allowed:
            return TrafficClass.STANDARD
        return next(c for c in RANK if c in allowed)
    try:
        chosen = TrafficClass(name)
    except ValueError:
        fail(f"bad --default-class {name!r}: use one of the key's classes", code=2)
    if chosen not in allowed:
        fail(f"--default-class {name} is not one of the key's classes", code=2)
    return chosen


def _row(record: ApiKey) -> dict[str, Any]:
    return {
        "id": record.key_id,
        "tenant": record.tenant,
        "classes": [c.value for c in RANK if c in record.classes],
        "default_class": record.default_class.value,
        "rpm": record.rpm,
        "tpm": record.tpm,
        "created_at": record.created_at.isoformat(timespec="seconds"),
        "revoked": record.revoked,
    }
