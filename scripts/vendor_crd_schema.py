"""Extract one version's OpenAPI schema from a CustomResourceDefinition, for the chart tests.

The chart tests validate the RayCluster and ServiceMonitor objects the chart renders against
the schemas of the CRDs that define them (kubernetes-validate knows only built-in kinds). This
writes ``spec.versions[name=VERSION].schema.openAPIV3Schema`` of a CRD file as JSON, without
the `description` fields (they are most of the file's size), with a `$comment` naming where it
came from. Keep the upstream LICENSE (and NOTICE) next to the output.

    python scripts/vendor_crd_schema.py ray.io_rayclusters.yaml v1 OUT.json \
        --source "ray-project/kuberay tag v1.7.0 (commit 59d663a), helm-chart/..."
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml


def _without_descriptions(node: Any) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "description" and isinstance(value, str):
                continue
            # A *property* may be called "description": keep the key, drop only the prose.
            out[key] = _without_descriptions(value)
        return out
    if isinstance(node, list):
        return [_without_descriptions(item) for item in node]
    return node


def extract(crd: dict[str, Any], version: str, source: str) -> dict[str, Any]:
    """The schema of ``version`` in ``crd``, descriptions removed, provenance in `$comment`."""
    spec = crd["spec"]
    for entry in spec["versions"]:
        if entry["name"] == version:
            schema = _without_descriptions(entry["schema"]["openAPIV3Schema"])
            kind = spec["names"]["kind"]
            comment = (
                f"{kind} {spec['group']}/{version}: spec.versions[].schema.openAPIV3Schema of "
                f"{source}, descriptions removed by scripts/vendor_crd_schema.py. Licensed under "
                "the Apache License 2.0; see the LICENSE and NOTICE files in this directory."
            )
            return {"$comment": comment, **schema}
    raise SystemExit(f"{crd['metadata']['name']} has no version {version}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("crd", type=Path, help="The CRD YAML file.")
    parser.add_argument("version", help="The version to extract, e.g. v1.")
    parser.add_argument("out", type=Path, help="Where to write the JSON schema.")
    parser.add_argument("--source", required=True, help="Repository, tag, commit and path.")
    args = parser.parse_args(argv)
    crd = yaml.safe_load(args.crd.read_text(encoding="utf-8"))
    schema = extract(crd, args.version, args.source)
    args.out.write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {args.out} ({args.out.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
