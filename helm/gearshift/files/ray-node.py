"""Join this worker pod to the Gearshift Ray cluster, with Ray in the foreground.

Usage: ray-node.py [--ray-label K=V]... [--ray-start-arg ARG]... [--print-only]
                   [gearshift node start flags]

`gearshift node start` declares the node (GPUs from NVML, the accelerator catalog, price,
ownership, labels) and starts Ray in the background, which suits a machine but not a container:
a container needs its main process to live as long as Ray does. So this asks
`gearshift node start --dry-run -o json` for the declaration and the exact `ray start` command
it would run, and execs that command with `--block` (plus any --ray-start-arg): when a Ray
process dies, `ray start --block` exits, the container stops and Kubernetes restarts it.

--ray-label adds a Ray node label that `gearshift node start --labels` refuses because its key
is reserved (gearshift.io/...): the chart adds `gearshift.io/kubernetes-node=<Node name>`, which
the Kubernetes-aware controller reads to find the Node (price, capacity type) of each Ray node.

The head address comes from RAY_ADDRESS, which KubeRay sets in every worker pod.
--print-only prints the final command as JSON instead of running it. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

# What `gearshift node start` sets for `ray start` (scheduler/controlplane/node_join.py).
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1"}


def gearshift_bin() -> str:
    found = shutil.which("gearshift")
    if found:
        return found
    beside = Path(sys.executable).parent / "gearshift"
    if beside.exists():
        return str(beside)
    raise SystemExit("ray-node: the `gearshift` command is not installed in this image")


def ray_command(
    ray_labels: list[str], ray_start_args: list[str], node_args: list[str], address: str
) -> list[str]:
    """The `ray start ... --block` command `gearshift node start` would run for this node,
    with ``ray_labels`` (``k=v``) added to its ``--labels``."""
    query = [gearshift_bin(), "node", "start", "--address", address, *node_args]
    result = subprocess.run(
        [*query, "--dry-run", "--output", "json"], stdout=subprocess.PIPE, text=True, check=False
    )
    if result.returncode != 0:
        raise SystemExit(result.returncode)
    plan = json.loads(result.stdout)
    command = list(plan["ray_start"])
    for label in ray_labels:
        key, sep, value = label.partition("=")
        if not sep or not key:
            raise SystemExit(f"ray-node: --ray-label wants KEY=VALUE, not {label!r}")
        plan["declaration"]["labels"][key] = value
        if "--labels" in command:
            at = command.index("--labels") + 1
            command[at] = f"{command[at]},{label}" if command[at] else label
        else:
            command += ["--labels", label]
    print(f"ray-node: declaring {json.dumps(plan['declaration'])}", file=sys.stderr)
    return [*command, *ray_start_args, "--block"]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ray-node.py", allow_abbrev=False)
    parser.add_argument("--ray-label", action="append", default=[])
    parser.add_argument("--ray-start-arg", action="append", default=[])
    parser.add_argument("--print-only", action="store_true")
    args, node_args = parser.parse_known_args(argv)
    address = os.environ.get("RAY_ADDRESS", "")
    if not address:
        raise SystemExit("ray-node: RAY_ADDRESS is not set (KubeRay sets it in worker pods)")
    command = ray_command(args.ray_label, args.ray_start_arg, node_args, address)
    if args.print_only:
        print(json.dumps(command))
        return 0
    os.execve(command[0], command, {**os.environ, **RAY_ENV})
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
