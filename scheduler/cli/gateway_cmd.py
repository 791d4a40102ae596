"""``gearshift gateway``: one more OpenAI endpoint for a running fleet, without its controller.

``gearshift serve`` runs the controller and a gateway in one process. Gateways scale out
separately (a Kubernetes Deployment behind a Service): each reads the endpoint table from the
controller actor over Ray, proxies straight to the engines, and relays the Batch API to the
gateway that holds the batch store (``--batch-upstream``). On SIGTERM ``/ready`` answers 503
for ``gateway.shutdown_drain_s`` while requests are still served, then in-flight requests get
``gateway.shutdown_timeout_s`` to finish.
"""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Annotated, Any

import typer

from scheduler.cli.output import console_err, fail
from scheduler.cli.serve_cmd import (
    AdminPortOption,
    ConfigFileOption,
    HostOption,
    PortOption,
    admin_token,
    announce_auth,
    display_url,
    is_loopback,
    with_overrides,
)
from scheduler.config import GearshiftConfig, demo_config, load_config
from scheduler.errors import ConfigError, ControlPlaneError, GearshiftError


def gateway(
    address: Annotated[
        str, typer.Option(help="The Ray cluster (HOST:PORT) whose controller `serve` runs.")
    ],
    config: ConfigFileOption = None,
    host: HostOption = None,
    port: PortOption = None,
    admin_port: AdminPortOption = None,
    batch_upstream: Annotated[
        str | None,
        typer.Option(
            help="Relay /v1/files and /v1/batches to this gateway (the one holding the batch "
            "store); overrides gateway.batch_upstream and leaves this gateway storeless."
        ),
    ] = None,
    wait: Annotated[
        float, typer.Option(help="Seconds to wait for the controller to appear.")
    ] = 120.0,
) -> None:
    """Serve the OpenAI endpoint for a fleet whose controller runs elsewhere, until SIGTERM.

    The admin API's bearer token comes from GEARSHIFT_ADMIN_TOKEN (or gateway.admin_token).

    Example: gearshift gateway --address ray-head:6379 -c gearshift.yaml --batch-upstream http://gearshift-head:8000
    """
    try:
        cfg = with_overrides(
            load_config(config) if config else demo_config(), host, port, admin_port
        )
        cfg = _storeless(cfg, batch_upstream)
        token = admin_token(cfg)
        from scheduler.gateway.server import bind

        public = bind(cfg.gateway.host, cfg.gateway.port)
        admin = bind(cfg.gateway.admin_host, cfg.gateway.admin_port)
    except ConfigError as exc:
        fail(str(exc), code=2)
    public_url = display_url(cfg.gateway.host, public.getsockname()[1])
    announce_auth(cfg, public_url)
    try:
        with console_err.status(f"Waiting for the controller on {address} ..."):
            controller = _controller(address, wait)
        console_err.print(
            f"OpenAI endpoint: {public_url}/v1 (admin API on "
            f"{display_url(cfg.gateway.admin_host, admin.getsockname()[1])})"
        )
        asyncio.run(_serve(cfg, controller, public, admin, token))
    except KeyboardInterrupt:
        pass
    except GearshiftError as exc:
        fail(str(exc))
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        public.close()
        admin.close()
    console_err.print("Stopped.")


def _storeless(cfg: GearshiftConfig, batch_upstream: str | None) -> GearshiftConfig:
    """With an upstream for the Batch API this gateway opens no batch store."""
    upstream = batch_upstream or cfg.gateway.batch_upstream
    if upstream is None:
        return cfg
    data = cfg.model_dump(mode="json")
    data["gateway"]["batch_upstream"] = upstream
    data["batch"]["enabled"] = False
    try:
        return GearshiftConfig.model_validate(data)
    except ValueError as exc:
        raise ConfigError(f"bad --batch-upstream: {exc}") from None


def _controller(address: str, wait_s: float) -> Any:
    """The controller actor's handle, once ``serve`` has started it."""
    if is_loopback(address):
        from scheduler.controlplane import prepare_loopback_ray

        prepare_loopback_ray()  # else Ray swaps loopback for the machine's primary address
    import ray
    from ray.exceptions import RayError

    from scheduler.controlplane.controller import CONTROLLER_NAME

    try:
        ray.init(address=address, namespace="gearshift", log_to_driver=False)
    except (RayError, ConnectionError, RuntimeError) as exc:
        raise ControlPlaneError(f"cannot join the cluster at {address}: {exc}") from None
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return ray.get_actor(CONTROLLER_NAME)
        except ValueError:  # not created yet
            if time.monotonic() > deadline:
                raise ControlPlaneError(
                    f"no Gearshift controller on {address} after {wait_s:g} s "
                    "(is `gearshift serve --address` running?)"
                ) from None
            time.sleep(1.0)


async def _serve(
    cfg: GearshiftConfig, controller: Any, public: Any, admin: Any, token: str
) -> None:
    from scheduler.controlplane.runtime import RayFleetStateSource
    from scheduler.gateway.server import run_gateway
    from scheduler.plugins import PluginRegistry

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await run_gateway(
        cfg,
        PluginRegistry.from_entry_points(),
        RayFleetStateSource(controller),
        public=public,
        admin=admin,
        admin_token=token,
        stop=stop,
    )
