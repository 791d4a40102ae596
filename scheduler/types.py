"""Value types shared by every layer: traffic classes, ownership, identifiers.

Nothing here does I/O or imports anything outside the standard library.
"""

from __future__ import annotations

import enum


class TrafficClass(enum.StrEnum):
    """How urgent a request is. Interactive work is never shed while batch work waits."""

    INTERACTIVE = "interactive"
    STANDARD = "standard"
    BATCH = "batch"


class ServiceTier(enum.StrEnum):
    """OpenAI ``service_tier`` values the gateway accepts on a request."""

    AUTO = "auto"
    DEFAULT = "default"
    FLEX = "flex"
    PRIORITY = "priority"


# The tier a response reports for the class that served it (OpenAI echoes the tier used).
TIER_FOR_CLASS: dict[TrafficClass, ServiceTier] = {
    TrafficClass.INTERACTIVE: ServiceTier.PRIORITY,
    TrafficClass.STANDARD: ServiceTier.DEFAULT,
    TrafficClass.BATCH: ServiceTier.FLEX,
}


class Ownership(enum.StrEnum):
    """How a node is paid for; spot nodes may vanish, owned ones cost their amortised price."""

    OWNED = "owned"
    ON_DEMAND = "on-demand"
    SPOT = "spot"


class EngineKind(enum.StrEnum):
    """Which engine a replica runs: the simulator twin or real vLLM."""

    SIM = "sim"
    VLLM = "vllm"


class KvCacheDtype(enum.StrEnum):
    """How a replica stores its KV cache (vLLM ``--kv-cache-dtype``)."""

    AUTO = "auto"
    FP8 = "fp8"

    @property
    def bytes_per_element(self) -> float:
        return 1.0 if self is KvCacheDtype.FP8 else 2.0


class ReplicaState(enum.StrEnum):
    """Lifecycle of a replica as the endpoint table shows it."""

    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"
    FAILED = "failed"


# Label keys Gearshift puts on Ray nodes. Ray reserves the ``ray.io/`` prefix.
LABEL_NODE_ID = "gearshift.io/node-id"
LABEL_GROUP = "gearshift.io/node-group"
LABEL_ACCELERATOR = "gearshift.io/accelerator"
LABEL_ACCELERATOR_MEMORY_GIB = "gearshift.io/accelerator-memory-gib"
LABEL_PRICE_PER_HOUR = "gearshift.io/price-per-hour"
LABEL_OWNERSHIP = "gearshift.io/ownership"
LABEL_ROLE = "gearshift.io/role"
LABEL_CPU_CORES = "gearshift.io/cpu-cores"
LABEL_SIMULATED = "gearshift.io/simulated"
