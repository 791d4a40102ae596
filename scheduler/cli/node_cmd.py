"""``gearshift node start|stop``: join this machine to a cluster with what it really has."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated

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
from scheduler.types import Ownership

app = typer.Typer(help="Join or leave a cluster.", no_args_is_help=True)

RAY = Path(sys.executable).parent / "ray"


@app.command("start")
def start(
    head: Annotated[
        bool, typer.Option("--head", help="Start the head (runs the controller).")
    ] = False,
    address: Annotated[
        str | None, typer.Option(help="Join the cluster whose head is at HOST:PORT.")
    ] = None,
    port: Annotated[int, typer.Option(help="Head only: the GCS port.")] = 6379,
    node_ip_address: Annotated[
        str | None, typer.Option(help="Address this node announces (default: Ray's choice).")
    ] = None,
    node_id: Annotated[str | None, typer.Option(help="Node id (default: the hostname).")] = None,
    group: Annotated[
        str | None, typer.Option(help="Node group (default: accelerator and count).")
    ] = None,
    price: Annotated[
        float | None, typer.Option(min=0, help="Dollars per node-hour (default: catalog).")
    ] = None,
    ownership: Annotated[Ownership, typer.Option(help="owned, on-demand or spot.")] = (
        Ownership.ON_DEMAND
    ),
    labels: Annotated[str, typer.Option(help="Extra labels: k=v,k2=v2.")] = "",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what would be declared; start nothing.")
    ] = False,
    output: Annotated[
        OutputFormat, typer.Option("--output", "-o", help=OUTPUT_OPTION_HELP)
    ] = OutputFormat.TABLE,
) -> None:
    """Start Ray on this machine with resources and labels from its GPUs (NVML) or CPUs.

    Example: gearshift node start --address 10.0.0.1:6379 --price 2.10 --ownership spot
    """
    from nodes.discovery.cpu import LinuxCpuProbe
    from nodes.discovery.nvml import NvmlGpuProbe
    from scheduler.controlplane.node_join import JoinRequest, parse_labels, plan_join

    try:
        request = JoinRequest(
            head=head,
            address=address,
            port=port,
            node_ip_address=node_ip_address,
            node_id=node_id,
            group=group,
            price_per_hour=price,
            ownership=ownership,
            labels=parse_labels(labels),
        )
        plan = plan_join(request, NvmlGpuProbe(), LinuxCpuProbe(), RAY)
    except ConfigError as exc:
        fail(str(exc), code=2)
    for warning in plan.warnings:
        console_err.print(f"[yellow]warning:[/yellow] {warning}", soft_wrap=True)
    declaration = dataclasses.asdict(plan.declaration)
    emit(
        {"declaration": declaration, "ray_start": plan.ray_argv, "dry_run": dry_run},
        output,
        lambda: make_table(
            f"Node {plan.declaration.node_id}",
            ["GPUs", "resources", "labels"],
            [(
                plan.declaration.num_gpus,
                ", ".join(f"{k}={v:g}" for k, v in plan.declaration.resources.items()),
                "\n".join(f"{k}={v}" for k, v in sorted(plan.declaration.labels.items())),
            )],
        ),
    )  # fmt: skip
    if dry_run:
        return
    result = subprocess.run(plan.ray_argv, env={**os.environ, **plan.env}, check=False)
    if result.returncode != 0:
        fail(f"`ray start` failed with exit code {result.returncode}")


@app.command("stop")
def stop() -> None:
    """Stop every Ray process of this machine (`ray stop`): its replicas go with it."""
    result = subprocess.run([str(RAY), "stop"], check=False)
    if result.returncode != 0:
        fail(f"`ray stop` failed with exit code {result.returncode}")
