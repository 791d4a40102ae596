"""Ray adapters around the pure cores: the local cluster, the controller, replicas, actuator.

Importing this package prepares Ray's environment before any submodule imports Ray: a
multi-node cluster on one machine needs ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (else the
driver looks for the GCS on the primary address instead of loopback), and usage reporting is
off because Gearshift never phones home.
"""

import os

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
