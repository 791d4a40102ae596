"""The serve session file: where a running ``gearshift serve`` tells other commands how to
reach its admin API (URL and token). Written with mode 0600; removed when serve stops."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated

import typer

from scheduler.errors import ControlPlaneError

DEFAULT_PATH = Path.home() / ".gearshift" / "serve.json"
ENVVAR = "GEARSHIFT_SESSION_FILE"


AdminUrlOption = Annotated[
    str | None, typer.Option("--admin-url", help="Admin API URL; from the session file if unset.")
]
TokenOption = Annotated[
    str | None, typer.Option(envvar="GEARSHIFT_ADMIN_TOKEN", help="Admin API token.")
]
SessionOption = Annotated[
    Path, typer.Option("--session-file", envvar=ENVVAR, help="Serve session file.")
]


@dataclass(frozen=True, slots=True)
class ServeSession:
    pid: int
    public_url: str
    admin_url: str
    admin_token: str


def write(path: Path, session: ServeSession) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        json.dump(asdict(session), file)
    temporary.replace(path)


def read(path: Path) -> ServeSession:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return ServeSession(**data)
    except FileNotFoundError:
        raise ControlPlaneError(
            f"no running `gearshift serve` found ({path} does not exist); start one, or pass "
            "--admin-url and --token"
        ) from None
    except (OSError, ValueError, TypeError) as exc:
        raise ControlPlaneError(f"cannot read the session file {path}: {exc}") from None


def remove(path: Path, pid: int) -> None:
    """Remove the file if it still belongs to process ``pid``."""
    try:
        if read(path).pid == pid:
            path.unlink()
    except (ControlPlaneError, OSError):
        pass


def admin_target(admin_url: str | None, token: str | None, path: Path) -> tuple[str, str]:
    """The admin URL and token: as given, else from the running serve's session file."""
    if admin_url is not None and token is not None:
        return admin_url, token
    found = read(path)
    return admin_url or found.admin_url, token or found.admin_token
