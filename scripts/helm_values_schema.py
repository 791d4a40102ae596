"""Regenerate the `config` part of the Helm chart's values.schema.json from the config model.

The chart's `config` value is the Gearshift config file, so its schema is the one
`gearshift config schema` prints (``scheduler.config.GearshiftConfig``). This script writes it
into helm/gearshift/values.schema.json as ``properties.config`` plus ``definitions`` named
``config.<Model>``, and leaves the rest of the file (the chart's own values, maintained by
hand) as it is. The file is JSON Schema draft-07, which Helm 3 and Helm 4 both validate.

    python scripts/helm_values_schema.py           # rewrite the file
    python scripts/helm_values_schema.py --check   # exit 1 when the file is out of date (CI)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_PATH = ROOT / "helm" / "gearshift" / "values.schema.json"
CONFIG_PREFIX = "config."
COMMAND = "python scripts/helm_values_schema.py"


def _config_schema() -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from scheduler.config import config_schema

    return config_schema()


def _retarget(node: Any) -> Any:
    """Point pydantic's ``#/$defs/X`` references at ``#/definitions/config.X``."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith("#/$defs/"):
                value = "#/definitions/" + CONFIG_PREFIX + value.removeprefix("#/$defs/")
            out[key] = _retarget(value)
        return out
    if isinstance(node, list):
        return [_retarget(item) for item in node]
    return node


def generated(current: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """``current`` with its config part replaced by ``config`` (pydantic's JSON schema)."""
    config = dict(config)
    definitions = _retarget(config.pop("$defs", {}))
    body = _retarget(config)
    body["$comment"] = f"Generated from scheduler.config.GearshiftConfig by {COMMAND}."
    schema = dict(current)
    properties = dict(schema.get("properties", {}))
    properties["config"] = body
    schema["properties"] = properties
    kept = {
        name: value
        for name, value in schema.get("definitions", {}).items()
        if not name.startswith(CONFIG_PREFIX)
    }
    schema["definitions"] = {
        **kept,
        **{CONFIG_PREFIX + name: value for name, value in sorted(definitions.items())},
    }
    return schema


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="Fail when the file differs from what it would be."
    )
    parser.add_argument("--path", type=Path, default=SCHEMA_PATH, help="The values.schema.json.")
    args = parser.parse_args(argv)
    text = args.path.read_text(encoding="utf-8")
    expected = render(generated(json.loads(text), _config_schema()))
    if args.check:
        if text != expected:
            print(
                f"{args.path} is out of date with scheduler/config.py; run `{COMMAND}` "
                "and commit the result.",
                file=sys.stderr,
            )
            return 1
        print(f"{args.path} is up to date.")
        return 0
    if text != expected:
        args.path.write_text(expected, encoding="utf-8")
        print(f"wrote {args.path}")
    else:
        print(f"{args.path} is up to date.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
