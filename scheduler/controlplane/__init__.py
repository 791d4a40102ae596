"""Ray adapters around the pure cores: the local cluster, the controller, replicas, actuator.

Ray reads some settings once, when it is imported, so an entry point that starts a loopback
cluster calls ``prepare_loopback_ray`` before anything imports Ray. Usage reporting is always
off: Gearshift never phones home.
"""

import os
import sys

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

_LOOPBACK_CLUSTER = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def prepare_loopback_ray() -> None:
    """Let several Ray nodes share this machine on 127.0.0.1 (before Ray is imported).

    Without ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` a driver looks for the GCS on the primary
    address instead of loopback. The same setting stops `ray start` from joining a real
    cluster, so it is set only for the loopback cluster `gearshift serve` starts itself.
    """
    if "ray" in sys.modules and os.environ.get(_LOOPBACK_CLUSTER) != "0":
        raise RuntimeError("prepare_loopback_ray() must run before Ray is imported")
    os.environ[_LOOPBACK_CLUSTER] = "0"
