"""Write the config `gearshift serve` reads: the chart's ConfigMap plus the Secret's admin token.

Usage: render-config.py CONFIG TOKEN_FILE OUT

The ConfigMap holds everything but secrets. `gearshift serve` takes the admin token only from
the config file (`gateway.admin_token`), so this init step merges the token into a copy of the
config on a memory-backed emptyDir, written with mode 0600. The merged file is then checked with
`gearshift config validate`. Standard library and PyYAML only (both are in the Gearshift image).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import yaml


def render(config_path: Path, token_path: Path, out_path: Path) -> None:
    config = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    if not isinstance(config, dict):
        raise SystemExit(f"render-config: {config_path}: the top level must be a mapping")
    token = token_path.read_text(encoding="utf-8").strip()
    if len(token) < 16:
        raise SystemExit(
            f"render-config: the admin token in {token_path} has {len(token)} characters; "
            "Gearshift needs at least 16"
        )
    gateway = config.setdefault("gateway", {})
    gateway["admin_token"] = token
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        yaml.safe_dump(config, out, sort_keys=False)
    print(f"render-config: wrote {out_path} (admin token from {token_path})", file=sys.stderr)


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    render(Path(argv[0]), Path(argv[1]), Path(argv[2]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
