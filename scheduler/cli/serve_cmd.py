"""``gearshift serve``: start the fleet on a loopback Ray cluster and serve the OpenAI API.

With no ``--config`` it runs the built-in demo fleet (simulated H100, A100-80GB, L4 and CPU
nodes), which needs no GPU and no network. Once the gateway is up it starts the batch
dispatcher as a child process (``scheduler.batches.dispatch_supervisor``) that runs batch lines
through the gateway with an internal token. Ctrl-C stops everything it started.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from scheduler.batches.dispatch_credentials import new_token
from scheduler.batches.dispatch_supervisor import LOG_NAME, DispatcherSupervisor, worker_argv
from scheduler.cli import session_file
from scheduler.cli.output import console_err, console_out, fail, make_table
from scheduler.config import GearshiftConfig, demo_config, load_config
from scheduler.errors import ConfigError, GearshiftError
from scheduler.gateway.auth import auth_required
from scheduler.gateway.endpoints import EndpointTable, FleetStateSource
from scheduler.plugins import PluginRegistry
from scheduler.routing.profiles import build_profiles
from scheduler.state import FleetState

ConfigFileOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Config file; the built-in demo fleet if omitted."),
]
HostOption = Annotated[str | None, typer.Option(help="Override gateway.host.")]
PortOption = Annotated[int | None, typer.Option(help="Override gateway.port.")]
AdminPortOption = Annotated[int | None, typer.Option(help="Override gateway.admin_port.")]


def serve(
    config: ConfigFileOption = None,
    host: HostOption = None,
    port: PortOption = None,
    admin_port: AdminPortOption = None,
    address: Annotated[
        str | None,
        typer.Option(
            help="Use the running cluster at HOST:PORT (nodes joined with `gearshift node "
            "start`) instead of starting one on loopback."
        ),
    ] = None,
    ready_timeout: Annotated[
        float, typer.Option(help="Seconds to wait for every replica before serving anyway.")
    ] = 120.0,
    session: Annotated[
        Path,
        typer.Option(
            "--session-file",
            envvar=session_file.ENVVAR,
            help="Where to write the admin URL and token for `gearshift status`.",
        ),
    ] = session_file.DEFAULT_PATH,
    no_auth: Annotated[
        bool,
        typer.Option(
            "--no-auth",
            help="Serve without API keys even when the key file exists (prints a warning).",
        ),
    ] = False,
) -> None:
    """Start the fleet and serve the OpenAI-compatible endpoint until Ctrl-C.

    Example: gearshift serve            (built-in demo fleet on http://127.0.0.1:8000)
    """
    started = time.monotonic()
    try:
        cfg = with_overrides(
            load_config(config) if config else demo_config(), host, port, admin_port
        )
        if no_auth:
            auth = cfg.gateway.auth.model_copy(update={"enabled": False})
            cfg = cfg.model_copy(update={"gateway": cfg.gateway.model_copy(update={"auth": auth})})
        registry = PluginRegistry.from_entry_points()
        build_profiles(registry, cfg.routing)  # fail on a bad routing config before Ray starts
        if address is None or is_loopback(address):
            from scheduler.controlplane import prepare_loopback_ray

            # Else Ray swaps a loopback address for the machine's primary one.
            prepare_loopback_ray()
        from scheduler.controlplane.runtime import AttachedRuntime, LocalRuntime
        from scheduler.gateway.server import bind

        # A local runtime checks real node groups against this machine.
        runtime: LocalRuntime | AttachedRuntime = (
            LocalRuntime(cfg) if address is None else AttachedRuntime(cfg, address)
        )
        cfg = runtime.config
        token = admin_token(cfg)
        public_socket = bind(cfg.gateway.host, cfg.gateway.port)
        admin_socket = bind(cfg.gateway.admin_host, cfg.gateway.admin_port)
    except ConfigError as exc:
        fail(str(exc), code=2)
    run = _Run(
        cfg=cfg,
        registry=registry,
        public=public_socket,
        admin=admin_socket,
        token=token,
        ready_timeout=ready_timeout,
        started=started,
        session=session,
        config_path=config,
    )
    announce_auth(cfg, run.public_url)

    nodes = sum(group.nodes for group in cfg.fleet.node_groups)
    starting = (
        f"Connecting to the cluster at {address} ..."
        if address
        else f"Starting a Ray cluster of {nodes} nodes on 127.0.0.1 ..."
    )
    try:
        with console_err.status(starting):
            runtime.start()
        asyncio.run(run.serve(runtime.fleet_source()))
    except KeyboardInterrupt:
        pass
    except GearshiftError as exc:
        fail(str(exc))
    finally:
        with console_err.status("Stopping replicas" + ("" if address else " and Ray") + " ..."):
            runtime.stop()
        session_file.remove(session, os.getpid())
        public_socket.close()
        admin_socket.close()
    console_err.print("Stopped.")


@dataclass(frozen=True, slots=True)
class _Run:
    """What one ``serve`` invocation needs once the control plane is up."""

    cfg: GearshiftConfig
    registry: PluginRegistry
    public: socket.socket
    admin: socket.socket
    token: str
    ready_timeout: float
    started: float
    session: Path
    config_path: Path | None = None
    dispatcher_token: str = field(default_factory=new_token)

    @property
    def public_url(self) -> str:
        return display_url(self.cfg.gateway.host, self.public.getsockname()[1])

    @property
    def admin_url(self) -> str:
        return display_url(self.cfg.gateway.admin_host, self.admin.getsockname()[1])

    async def serve(self, source: FleetStateSource) -> None:
        """Serve until SIGINT/SIGTERM; announce the endpoint once the fleet is ready."""
        from scheduler.gateway.server import run_gateway

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        dispatcher: list[asyncio.Task[None]] = []

        async def on_started(table: EndpointTable) -> None:
            state = await _wait_ready(table, self.ready_timeout, stop)
            session_file.write(
                self.session,
                session_file.ServeSession(os.getpid(), self.public_url, self.admin_url, self.token),
            )
            _print_summary(
                self.cfg, state, time.monotonic() - self.started, self.public_url, self.admin_url
            )
            if self.cfg.batch.enabled and not stop.is_set():
                dispatcher.append(asyncio.create_task(self._dispatcher().run(stop)))

        try:
            await run_gateway(
                self.cfg,
                self.registry,
                source,
                public=self.public,
                admin=self.admin,
                admin_token=self.token,
                stop=stop,
                on_started=on_started,
                dispatcher_token=self.dispatcher_token,
            )
        finally:
            stop.set()
            await asyncio.gather(*dispatcher)

    def _dispatcher(self) -> DispatcherSupervisor:
        log_path = Path(self.cfg.batch.store_path).expanduser() / LOG_NAME
        return DispatcherSupervisor(
            worker_argv(self.config_path, self.public_url, os.getpid(), log_path),
            token=self.dispatcher_token,
            log_path=log_path,
            report=lambda line: console_err.print(line, markup=False, soft_wrap=True),
        )


async def _wait_ready(table: EndpointTable, timeout: float, stop: asyncio.Event) -> FleetState:
    deadline = time.monotonic() + timeout
    with Progress(
        TextColumn("Starting replicas"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console_err,
        transient=True,
    ) as progress:
        task = progress.add_task("replicas", total=None)
        while not stop.is_set():
            state = table.state
            ready = sum(1 for replica in state.replicas if replica.state == "ready")
            progress.update(task, completed=ready, total=max(state.planned_replicas, 1))
            if state.ready or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
    if not table.state.ready:
        console_err.print(
            f"[yellow]warning:[/yellow] not every replica is ready after {timeout:.0f} s; "
            "serving with what is up (see `gearshift status`)."
        )
    return table.state


def _print_summary(
    cfg: GearshiftConfig, state: FleetState, elapsed: float, public_url: str, admin_url: str
) -> None:
    rows = [
        (
            r.replica_id,
            r.model,
            r.accelerator,
            r.node_id,
            r.tensor_parallel,
            r.price_per_hour,
            r.state,
        )
        for r in state.replicas
    ]
    console_out.print(
        make_table(
            f"Placement: {len(rows)} replicas, ${state.cost_per_hour:,.2f}/h",
            ["replica", "model", "accelerator", "node", "TP", "$/h", "state"],
            rows,
        )
    )
    for rejection in state.unplaced:
        console_out.print(f"[yellow]not placed[/yellow] {rejection.subject}: {rejection.reason}")
    model = cfg.models[0].name if cfg.models else "MODEL"
    console_out.print(f"\nReady in {elapsed:.1f} s. OpenAI endpoint: [bold]{public_url}/v1[/bold]")
    console_out.print(f"Admin API: {admin_url} (token in the session file; `gearshift status`)")
    console_out.print("Try:")
    console_out.print(
        f"  curl {public_url}/v1/chat/completions -H 'Content-Type: application/json' \\\n"
        f'    -d \'{{"model": "{model}", "service_tier": "priority", '
        f'"messages": [{{"role": "user", "content": "Hello!"}}]}}\' -i',
        soft_wrap=True,
        markup=False,
    )
    console_out.print("Ctrl-C stops everything.")


def announce_auth(cfg: GearshiftConfig, public_url: str) -> None:
    auth = cfg.gateway.auth
    if auth_required(auth):
        console_err.print(f"API keys required on {public_url}/v1 (key file: {auth.keys_file}).")
        return
    why = "--no-auth or gateway.auth.enabled: false" if not auth.enabled else "no key file yet"
    console_err.print(
        f"[bold red]WARNING: authentication is OFF: anyone who can reach {public_url} can use "
        f"every class[/bold red] ({why}; create keys with `gearshift keys create`).",
        soft_wrap=True,
    )


def with_overrides(
    cfg: GearshiftConfig, host: str | None, port: int | None, admin_port: int | None
) -> GearshiftConfig:
    updates = {
        key: value
        for key, value in (("host", host), ("port", port), ("admin_port", admin_port))
        if value is not None
    }
    if not updates:
        return cfg
    data = cfg.model_dump(mode="json")
    data["gateway"].update(updates)
    try:
        return GearshiftConfig.model_validate(data)
    except ValueError as exc:
        raise ConfigError(f"bad override: {exc}") from None


ADMIN_TOKEN_ENV = "GEARSHIFT_ADMIN_TOKEN"


def admin_token(cfg: GearshiftConfig) -> str:
    """The admin API's token: $GEARSHIFT_ADMIN_TOKEN, gateway.admin_token, or a fresh one."""
    token = os.environ.get(ADMIN_TOKEN_ENV) or cfg.gateway.admin_token
    if token is not None and len(token) < 16:
        raise ConfigError(f"{ADMIN_TOKEN_ENV} must be at least 16 characters")
    return token or secrets.token_urlsafe(24)


def is_loopback(address: str) -> bool:
    return address.rsplit(":", 1)[0] in {"127.0.0.1", "localhost"}


def display_url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in {"0.0.0.0", ""} else host
    return f"http://{shown}:{port}"
