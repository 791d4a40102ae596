"""How long `gearshift serve` (built-in demo fleet) takes to be ready, against a baseline measured
in the same run: a bare Ray cluster of the same number of nodes on loopback, started and
connected with nothing on it. The ratio is what Gearshift adds on top of Ray itself.

    python benchmarks/demo_startup.py [--runs 3]

Ready means: every planned replica answers, the endpoint serves, the session file is written.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scheduler.config import demo_config
from scheduler.inventory import declare_fleet

BASELINE = """
import os, sys, time
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
started = time.monotonic()
import ray
from ray.cluster_utils import Cluster
cluster = Cluster(initialize_head=True, head_node_args={
    "num_cpus": 1, "node_ip_address": "127.0.0.1", "include_dashboard": False})
for _ in range(int(sys.argv[1])):
    cluster.add_node(wait=False, num_cpus=1, node_ip_address="127.0.0.1")
cluster.wait_for_nodes()
ray.init(address=cluster.address, log_to_driver=False)
print(time.monotonic() - started)
ray.shutdown()
cluster.shutdown()
"""


def bare_ray(nodes: int) -> float:
    result = subprocess.run(
        [sys.executable, "-c", BASELINE, str(nodes)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return float(result.stdout.strip().splitlines()[-1])


def gearshift_serve() -> float:
    gearshift = Path(sys.executable).parent / "gearshift"
    with tempfile.TemporaryDirectory() as tmp:
        session = Path(tmp) / "session.json"
        env = {**os.environ, "GEARSHIFT_SESSION_FILE": str(session)}
        started = time.monotonic()
        process = subprocess.Popen(
            [str(gearshift), "serve", "--port", "0", "--admin-port", "0"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        try:
            while not session.exists():
                if process.poll() is not None:
                    raise SystemExit(f"gearshift serve exited with {process.returncode}")
                if time.monotonic() - started > 300:
                    raise SystemExit("gearshift serve was not ready in 300 s")
                time.sleep(0.05)
            return time.monotonic() - started
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    runs = parser.parse_args().runs
    nodes = len(declare_fleet(demo_config()))
    baseline, serve = [], []
    for index in range(runs):
        baseline.append(bare_ray(nodes))
        serve.append(gearshift_serve())
        print(
            f"run {index + 1}: bare Ray {baseline[-1]:.1f} s, gearshift serve {serve[-1]:.1f} s",
            file=sys.stderr,
        )
    base, full = statistics.median(baseline), statistics.median(serve)
    print(
        f"\nDemo fleet: {nodes} worker nodes + head, "
        f"{sum(m.replicas for m in demo_config().models)} replicas; median of {runs} runs"
    )
    print(f"{'what':<44}{'seconds':>9}{'ratio':>8}")
    print(f"{'bare Ray cluster, same node count (baseline)':<44}{base:>9.1f}{1.0:>8.2f}")
    print(f"{'gearshift serve until ready':<44}{full:>9.1f}{full / base:>8.2f}")
    print(f"{'min / max gearshift serve':<44}{min(serve):>5.1f}/{max(serve):.1f}")


if __name__ == "__main__":
    main()
