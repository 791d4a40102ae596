"""The one config model: fleet, models, traffic classes, routing, placement and gateway.

Every section is a frozen pydantic model that rejects unknown keys, and every field is described:
the same model generates ``gearshift config schema`` and (later) the Helm chart's values schema.
``load_config`` turns a YAML file into a validated ``GearshiftConfig`` or raises ``ConfigError``
whose message names each bad field by its path.
"""

from __future__ import annotations

from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from nodes.accelerators import AcceleratorKind, accelerator
from nodes.models import (
    Dtype,
    ModelArchitecture,
    architecture_from_hf_config,
    catalog_model,
)
from scheduler.errors import CatalogError, ConfigError
from scheduler.types import EngineKind, KvCacheDtype, Ownership, TrafficClass

_NAME_PATTERN = r"^[a-z0-9]([a-z0-9.\-]*[a-z0-9])?$"


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _require_unique(names: list[str], what: str) -> None:
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"{what}; repeated: {', '.join(repeated)}")


# --------------------------------------------------------------------------------------- fleet


class CpuSpec(_Section):
    """Hardware of a CPU-only node; used when a node group's accelerator is ``CPU``."""

    cores: int = Field(16, ge=1, le=1024, description="Physical cores an engine may use.")
    memory_gib: float = Field(64.0, gt=0, description="Host memory available to engines, GiB.")
    memory_bandwidth_gbps: float | None = Field(
        None, gt=0, description="Memory bandwidth in GB/s; derived from the core count if unset."
    )


class NodeGroup(_Section):
    """A set of identical machines: same accelerator type and count, price and ownership."""

    name: str = Field(
        pattern=_NAME_PATTERN,
        max_length=40,
        description="Group name; node ids are `<name>-<index>`.",
    )
    accelerator: str = Field(
        description="Accelerator catalog name (`gearshift catalog`), e.g. H100-SXM, L4 or CPU."
    )
    accelerators_per_node: int = Field(
        1, ge=1, le=16, description="Accelerators in each node (1 for CPU nodes)."
    )
    nodes: int = Field(1, ge=0, le=10_000, description="How many nodes the group has.")
    price_per_node_hour: float | None = Field(
        None,
        ge=0,
        description="What one node costs per hour, in dollars; defaults to the catalog price "
        "times accelerators_per_node.",
    )
    marginal_price_per_node_hour: float | None = Field(
        None,
        ge=0,
        description="What the cost solver counts per node-hour of this group when it decides "
        "whether to use it (e.g. power and space only, for owned hardware already paid for); "
        "the node price when unset. Reports still show the node price.",
    )
    ownership: Ownership = Field(
        Ownership.ON_DEMAND, description="owned, on-demand or spot: how the node is paid for."
    )
    simulated: bool = Field(
        True,
        description="Declare the accelerators to Ray instead of detecting them, for demos and "
        "tests on machines without them.",
    )
    cpu: CpuSpec | None = Field(None, description="CPU node hardware (accelerator CPU only).")
    labels: dict[str, str] = Field(
        default_factory=dict, description="Extra Ray node labels for this group."
    )

    @field_validator("accelerator")
    @classmethod
    def _known_accelerator(cls, value: str) -> str:
        try:
            return accelerator(value).name
        except CatalogError as exc:
            raise ValueError(str(exc)) from None

    @model_validator(mode="after")
    def _cpu_shape(self) -> Self:
        is_cpu = accelerator(self.accelerator).kind is AcceleratorKind.CPU
        if is_cpu and self.accelerators_per_node != 1:
            raise ValueError("a CPU node counts as one accelerator: set accelerators_per_node: 1")
        if not is_cpu and self.cpu is not None:
            raise ValueError("`cpu` describes CPU nodes only; remove it or use accelerator: CPU")
        return self

    @property
    def is_cpu(self) -> bool:
        return accelerator(self.accelerator).kind is AcceleratorKind.CPU

    def node_price_per_hour(self) -> float:
        """Dollars per node-hour: the override, or the catalog price times the accelerator count."""
        if self.price_per_node_hour is not None:
            return self.price_per_node_hour
        return accelerator(self.accelerator).default_price_per_hour * self.accelerators_per_node

    def solver_price_per_hour(self) -> float:
        """Dollars per node-hour the cost solver weighs: the marginal price, else the price."""
        if self.marginal_price_per_node_hour is not None:
            return self.marginal_price_per_node_hour
        return self.node_price_per_hour()

    def node_ids(self) -> list[str]:
        return [f"{self.name}-{index}" for index in range(self.nodes)]


class FleetConfig(_Section):
    """The machines Gearshift may use."""

    node_groups: list[NodeGroup] = Field(
        default_factory=list, description="Groups of identical nodes."
    )

    @field_validator("node_groups")
    @classmethod
    def _unique_groups(cls, groups: list[NodeGroup]) -> list[NodeGroup]:
        names = [group.name for group in groups]
        _require_unique(names, "node group names must be unique")
        return groups


# -------------------------------------------------------------------------------------- models


class VllmOptions(_Section):
    """How vLLM runs a model (engine ``vllm`` only); placement sets the rest of its flags."""

    enforce_eager: bool = Field(
        False, description="Skip CUDA-graph / torch.compile warm-up: faster start, slower decode."
    )
    cpu_kv_cache_gib: float = Field(
        1.0, ge=1, le=4096, description="KV-cache space on CPU nodes, GiB (VLLM_CPU_KVCACHE_SPACE)."
    )
    extra_args: list[str] = Field(
        default_factory=list,
        description="More `vllm serve` flags, verbatim; the ones Gearshift sets are refused.",
    )
    env: dict[str, str] = Field(
        default_factory=dict, description="Extra environment variables for the engine process."
    )


class ModelConfig(_Section):
    """One served model: where its architecture comes from, how it runs, how many replicas."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-/]*$",
        max_length=128,
        description="The name clients send as `model`.",
    )
    catalog: str | None = Field(
        None, description="Built-in model to take the architecture from; defaults to `name`."
    )
    architecture: ModelArchitecture | None = Field(
        None, description="Explicit architecture numbers, instead of a catalog entry."
    )
    hf_config: str | None = Field(
        None, description="Path to a local Hugging Face config.json (or its directory)."
    )
    dtype: Dtype = Field(Dtype.BF16, description="Weight dtype or quantization.")
    max_context: int = Field(
        8192, ge=16, le=1_048_576, description="Longest prompt + output a replica accepts."
    )
    engine: EngineKind = Field(EngineKind.SIM, description="sim (simulated) or vllm.")
    replicas: int = Field(1, ge=0, le=10_000, description="Replicas to keep running.")
    accelerators: list[str] = Field(
        default_factory=list,
        description="Accelerator types this model may use; empty means any that fits.",
    )
    tensor_parallel: int | None = Field(
        None, ge=1, le=16, description="Fixed tensor-parallel degree; chosen per type if unset."
    )
    max_num_seqs: int = Field(256, ge=1, le=4096, description="Most sequences a replica batches.")
    kv_cache_dtype: KvCacheDtype = Field(
        KvCacheDtype.AUTO,
        description="KV cache storage: `auto` (the model dtype, 16-bit) or `fp8` (half the "
        "bytes per token; vLLM `--kv-cache-dtype fp8`).",
    )
    weights: str | None = Field(
        None,
        description="Checkpoint vLLM loads: a local directory (`~` allowed) or a Hugging Face "
        "id. Required for engine vllm; a local directory's config.json also gives the "
        "architecture.",
    )
    vllm: VllmOptions = Field(default_factory=VllmOptions, description="vLLM engine options.")

    @field_validator("accelerators")
    @classmethod
    def _known_accelerators(cls, values: list[str]) -> list[str]:
        try:
            return [accelerator(value).name for value in values]
        except CatalogError as exc:
            raise ValueError(str(exc)) from None

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        given = [
            key
            for key, value in (
                ("catalog", self.catalog),
                ("architecture", self.architecture),
                ("hf_config", self.hf_config),
            )
            if value is not None
        ]
        if len(given) > 1:
            raise ValueError(f"give one architecture source, not {' and '.join(given)}")
        if self.engine is EngineKind.VLLM and self.weights is None:
            raise ValueError("engine vllm needs `weights`: a checkpoint directory or HF id")
        local = self.local_weights
        if local is not None and not local.is_dir():
            raise ValueError(
                f"weights directory {local} does not exist (for a tiny test model, run "
                f"`gearshift dev tiny-model {self.weights}`)"
            )
        if not given and not self._weights_config_exists():
            try:
                catalog_model(self.name)
            except CatalogError as exc:
                raise ValueError(
                    f"`{self.name}` is not a catalog model; set catalog, architecture, "
                    f"hf_config or local weights. {exc}"
                ) from None
        if self.catalog is not None:
            try:
                catalog_model(self.catalog)
            except CatalogError as exc:
                raise ValueError(str(exc)) from None
        return self

    @property
    def local_weights(self) -> Path | None:
        """The weights as a local directory, when they name one (not a Hugging Face id)."""
        if self.weights is None:
            return None
        path = Path(self.weights).expanduser()
        looks_local = self.weights.startswith(("/", ".", "~")) or path.exists()
        return path if looks_local else None

    def _weights_config_exists(self) -> bool:
        local = self.local_weights
        return local is not None and (local / "config.json").is_file()

    @cached_property
    def resolved_architecture(self) -> ModelArchitecture:
        """The architecture numbers, from the first source present: explicit numbers, an HF
        config file, an explicit catalog entry, the local weights' config.json, the catalog
        entry named like the model."""
        if self.architecture is not None:
            return self.architecture
        if self.hf_config is not None:
            return architecture_from_hf_config(self.hf_config)
        local = self.local_weights
        if self.catalog is None and local is not None and self._weights_config_exists():
            return architecture_from_hf_config(local)
        return catalog_model(self.catalog or self.name).architecture


# ---------------------------------------------------------------------------- traffic classes


class ClassTargets(_Section):
    """Service-level targets of one traffic class."""

    ttft_s: float | None = Field(None, gt=0, description="Time-to-first-token target, seconds.")
    tpot_s: float | None = Field(None, gt=0, description="Time-per-output-token target, seconds.")
    deadline_s: float | None = Field(
        None, gt=0, description="Whole-request deadline, seconds (batch work)."
    )
    engine_priority: int = Field(
        0,
        ge=-1_000_000,
        le=1_000_000,
        description="vLLM `priority` sent with the request; lower runs first.",
    )

    @model_validator(mode="after")
    def _has_a_target(self) -> Self:
        if self.ttft_s is None and self.tpot_s is None and self.deadline_s is None:
            raise ValueError("set at least one of ttft_s, tpot_s, deadline_s")
        return self


class TrafficClassesConfig(_Section):
    """Targets per class. `priority` maps to interactive, `default`/`auto` to standard, `flex`
    to batch."""

    interactive: ClassTargets = Field(
        default_factory=lambda: ClassTargets(ttft_s=0.5, tpot_s=0.05, engine_priority=-10),
        description="Latency-critical traffic (service_tier=priority).",
    )
    standard: ClassTargets = Field(
        default_factory=lambda: ClassTargets(ttft_s=2.0, tpot_s=0.1, engine_priority=0),
        description="Default traffic (service_tier=default or auto).",
    )
    batch: ClassTargets = Field(
        default_factory=lambda: ClassTargets(deadline_s=86_400.0, engine_priority=10),
        description="Throughput traffic (service_tier=flex and the Batch API).",
    )

    def targets(self, traffic_class: TrafficClass) -> ClassTargets:
        targets: ClassTargets = getattr(self, traffic_class.value)
        return targets


# ------------------------------------------------------------------------------------ plugins


class PluginSpec(_Section):
    """An instance of a registered plugin type, with its own params."""

    name: str = Field(pattern=_NAME_PATTERN, description="Instance name that profiles refer to.")
    type: str = Field(description="Registered plugin type, e.g. `ready-filter`.")
    params: dict[str, Any] = Field(
        default_factory=dict, description="Parameters, validated by the plugin's params model."
    )


class WeightedRef(_Section):
    """A scorer used by a profile, with its weight."""

    ref: str = Field(description="Name of a plugin instance.")
    weight: float = Field(1.0, gt=0, description="Multiplier on the scorer's [0,1] score.")


class ProfileSpec(_Section):
    """Filter → score → pick pipeline for one traffic class."""

    filters: list[str] = Field(default_factory=list, description="Filter instance names, in order.")
    scorers: list[WeightedRef] = Field(default_factory=list, description="Weighted scorers.")
    picker: str = Field(description="Picker instance name.")


def _default_plugins() -> list[PluginSpec]:
    return [
        PluginSpec(name="ready", type="ready-filter"),
        PluginSpec(name="context", type="context-fit-filter"),
        PluginSpec(name="kv-headroom", type="kv-headroom-filter"),
        PluginSpec(name="queue-headroom", type="queue-headroom-filter"),
        PluginSpec(name="slo-ttft", type="slo-ttft-filter"),
        PluginSpec(name="yield", type="yield-to-interactive-filter"),
        PluginSpec(name="ttft", type="predicted-ttft-scorer"),
        PluginSpec(name="cost", type="cost-per-token-scorer"),
        PluginSpec(name="queue", type="queue-depth-scorer"),
        PluginSpec(name="best", type="max-score-picker"),
    ]


def _default_profiles() -> dict[TrafficClass, ProfileSpec]:
    safe = ["ready", "context", "kv-headroom"]
    return {
        TrafficClass.INTERACTIVE: ProfileSpec(
            filters=[*safe, "slo-ttft"],
            scorers=[WeightedRef(ref="ttft", weight=1.0)],
            picker="best",
        ),
        TrafficClass.STANDARD: ProfileSpec(
            filters=[*safe, "slo-ttft"],
            scorers=[WeightedRef(ref="ttft", weight=2.0), WeightedRef(ref="cost", weight=1.0)],
            picker="best",
        ),
        TrafficClass.BATCH: ProfileSpec(
            filters=[*safe, "queue-headroom", "yield"],
            scorers=[WeightedRef(ref="cost", weight=3.0), WeightedRef(ref="queue", weight=1.0)],
            picker="best",
        ),
    }


class RoutingConfig(_Section):
    """Routing plugins and one profile per traffic class."""

    plugins: list[PluginSpec] = Field(
        default_factory=_default_plugins, description="Plugin instances profiles can refer to."
    )
    profiles: dict[TrafficClass, ProfileSpec] = Field(
        default_factory=_default_profiles, description="One pipeline per traffic class."
    )

    @model_validator(mode="after")
    def _refs_resolve(self) -> Self:
        names = [plugin.name for plugin in self.plugins]
        _require_unique(names, "plugin names must be unique")
        missing_classes = [c.value for c in TrafficClass if c not in self.profiles]
        if missing_classes:
            raise ValueError(f"a profile is needed for every class; missing: {missing_classes}")
        for traffic_class, profile in self.profiles.items():
            refs = [*profile.filters, *(s.ref for s in profile.scorers), profile.picker]
            unknown = [ref for ref in refs if ref not in names]
            if unknown:
                raise ValueError(
                    f"profile {traffic_class.value} refers to unknown plugins {unknown}; "
                    f"defined: {names}"
                )
        return self


class PlacementConfig(_Section):
    """How replicas are placed and reconciled."""

    solver: PluginSpec = Field(
        default_factory=lambda: PluginSpec(name="solver", type="cost-milp-solver"),
        description="The placement solver plugin.",
    )
    interval_s: float = Field(2.0, gt=0, le=3600, description="Seconds between reconcile rounds.")
    gpu_memory_utilization: float = Field(
        0.9, gt=0.1, le=0.99, description="Fraction of accelerator memory an engine may use."
    )
    restart_backoff_s: float = Field(
        1.0, ge=0, le=600, description="First delay before restarting a failed replica; doubles."
    )
    start_timeout_s: float = Field(
        900.0,
        gt=0,
        le=86_400,
        description="A replica not ready this long after its start is failed and replaced "
        "(covers unplaceable actors and engines that hang while loading).",
    )
    drain_grace_s: float = Field(
        1.0,
        ge=0,
        le=600,
        description="After a replica leaves the endpoint table, wait this long (gateways "
        "refresh) before waiting for it to go idle.",
    )
    drain_timeout_s: float = Field(
        30.0, ge=0, le=3600, description="Longest wait for in-flight requests before SIGTERM."
    )
    demand_half_life_s: float = Field(
        300.0,
        gt=0,
        le=86_400,
        description="Half-life of the observed request rates that drive replanning (an "
        "exponentially decayed average per model and class).",
    )
    replan_hysteresis: float = Field(
        0.1,
        ge=0,
        le=1,
        description="A replan that only saves money replaces what runs only when it is at least "
        "this fraction cheaper; unmet demand always triggers it.",
    )
    max_disruptions: int = Field(
        2,
        ge=0,
        le=10_000,
        description="Most running replicas one replan may stop to save money (failed replicas "
        "and vanished nodes do not count). New replicas start before old ones drain.",
    )


# ------------------------------------------------------------------------------------ gateway


class ClassAdmission(_Section):
    """How one traffic class waits in the gateway for an admission slot."""

    max_queued: int = Field(
        1024,
        ge=0,
        le=1_000_000,
        description="Most requests of this class waiting at once; one more gets 503 + "
        "Retry-After (`queue_full`). 0 never queues: a closed gate answers 503 at once.",
    )
    max_queued_bytes: int = Field(
        64 * 1_048_576, ge=0, description="Most request-body bytes of this class waiting at once."
    )
    queue_ttl_s: float = Field(
        30.0,
        gt=0,
        le=86_400,
        description="Longest wait; an older request ends with 503 (`queue_timeout`).",
    )
    saturation_threshold: float | None = Field(
        None,
        description="Dispatched only while the model's fleet saturation (0 idle, 1 full) is "
        "below this; null: whenever routing found a replica (never queued).",
        gt=0,
        le=1,
    )
    yield_to_interactive_s: float | None = Field(
        None,
        ge=0,
        le=3600,
        description="Yield replicas that had interactive work in flight less than this many "
        "seconds ago: they count out of this class's saturation and its routing (the "
        "`yield-to-interactive-filter`), so it backfills only what interactive traffic left "
        "idle. null: never yields.",
    )


class AdmissionConfig(_Section):
    """Per-class admission in the gateway: strict priority (interactive, standard, batch),
    saturation gates, bounded queues with TTLs; batch is shed before interactive waits."""

    interactive: ClassAdmission = Field(
        default_factory=lambda: ClassAdmission(
            max_queued=1024,
            max_queued_bytes=64 * 1_048_576,
            queue_ttl_s=30.0,
            saturation_threshold=None,
        ),
        description="Latency-critical traffic: admitted whenever routing found a replica.",
    )
    standard: ClassAdmission = Field(
        default_factory=lambda: ClassAdmission(
            max_queued=1024,
            max_queued_bytes=64 * 1_048_576,
            queue_ttl_s=30.0,
            saturation_threshold=0.95,
        ),
        description="Default traffic: waits only when the fleet is nearly full.",
    )
    batch: ClassAdmission = Field(
        default_factory=lambda: ClassAdmission(
            max_queued=4096,
            max_queued_bytes=128 * 1_048_576,
            queue_ttl_s=300.0,
            saturation_threshold=0.8,
            yield_to_interactive_s=2.0,
        ),
        description="Throughput traffic: yields to the other classes well before saturation.",
    )
    max_queued_total: int = Field(
        4096,
        ge=0,
        le=1_000_000,
        description="Most requests waiting over all classes; when full, a higher class evicts "
        "the youngest request of the lowest class waiting (which gets 503, `shed`).",
    )
    max_queued_bytes_total: int = Field(
        128 * 1_048_576, ge=0, description="Most request-body bytes waiting over all classes."
    )
    full_queue_depth: int = Field(
        8,
        ge=1,
        le=100_000,
        description="Requests queued on one engine at which it counts as saturated; a "
        "replica's saturation is max(KV usage, busy batch slots / max_num_seqs, queued / "
        "this), the model's the mean over its ready replicas.",
    )
    dispatch_interval_s: float = Field(
        0.01,
        gt=0,
        le=5,
        description="While requests wait: how often expiry is checked and the gates re-read "
        "(at most one gated request per model is dispatched per interval).",
    )

    def limits(self, traffic_class: TrafficClass) -> ClassAdmission:
        limits: ClassAdmission = getattr(self, traffic_class.value)
        return limits


class AuthConfig(_Section):
    """API keys on the public endpoint (`gearshift keys create`)."""

    enabled: bool = Field(
        True,
        description="Require an API key on every /v1 route once the keys file exists; false "
        "turns authentication off (serve then prints a warning).",
    )
    keys_file: str = Field(
        "~/.gearshift/keys.json",
        min_length=1,
        description="The key file (salted hashes only, mode 0600); `~` is the user's home.",
    )
    reload_interval_s: float = Field(
        1.0,
        gt=0,
        le=60,
        description="How often a running gateway looks for changes to the key file "
        "(revocations take effect within this).",
    )


class GatewayConfig(_Section):
    """The OpenAI-compatible endpoint and the admin API."""

    host: str = Field("127.0.0.1", description="Address the public endpoint binds.")
    port: int = Field(8000, ge=0, le=65535, description="Port of the public endpoint.")
    admin_host: str = Field("127.0.0.1", description="Address the admin API binds.")
    admin_port: int = Field(8001, ge=0, le=65535, description="Port of the admin API.")
    admin_token: str | None = Field(
        None,
        min_length=16,
        description="Bearer token for the admin API; generated at start and written to the "
        "state file when unset.",
    )
    max_body_bytes: int = Field(
        1_048_576, ge=1024, le=256 * 1_048_576, description="Largest request body accepted."
    )
    max_tokens_cap: int = Field(
        32_768, ge=1, description="Largest max_tokens a request may ask for."
    )
    max_n: int = Field(
        4,
        ge=1,
        le=128,
        description="Most choices (`n`) one request may ask for; each multiplies engine work.",
    )
    request_timeout_s: float = Field(600.0, gt=0, description="Upper bound on one proxied request.")
    connect_timeout_s: float = Field(
        2.0, gt=0, description="Time to connect to an engine before trying the next."
    )
    load_refresh_s: float = Field(
        0.5, gt=0, le=60, description="How often engine /metrics and the endpoint table are read."
    )
    retry_after_s: float = Field(
        1.0, gt=0, le=120, description="Retry-After sent when no replica can take a request."
    )
    shutdown_drain_s: float = Field(
        0.0,
        ge=0,
        le=3600,
        description="On SIGTERM, /ready answers 503 (draining) while the gateway keeps "
        "serving this long, so load balancers stop sending before it stops listening.",
    )
    batch_upstream: str | None = Field(
        None,
        pattern=r"^https?://[^\s/]+(/.*)?$",
        description="For a gateway without the batch store (`batch.enabled: false`): the URL "
        "of the gateway that holds it (e.g. the head's), to which /v1/files and /v1/batches "
        "are relayed; unset: those routes answer 404.",
    )
    shutdown_timeout_s: float = Field(
        5.0,
        ge=0,
        le=3600,
        description="Once it stops listening, how long requests in flight get to finish.",
    )
    admission: AdmissionConfig = Field(
        default_factory=AdmissionConfig,
        description="Per-class queues, priority and shedding in front of the engines.",
    )
    auth: AuthConfig = Field(
        default_factory=AuthConfig, description="API keys, tenants and per-key limits."
    )


# --------------------------------------------------------------------------------------- batch


class BatchConfig(_Section):
    """The Batch API (`/v1/files`, `/v1/batches`): its durable store, limits and leases."""

    enabled: bool = Field(
        True, description="Serve /v1/files and /v1/batches; the gateway opens the store at start."
    )
    store_path: str = Field(
        "~/.gearshift/batch",
        min_length=1,
        description="Directory of the batch store (SQLite database and file bodies); `~` is "
        "the user's home. Use a local persistent volume: network filesystems are refused.",
    )
    synchronous: str = Field(
        "full",
        pattern=r"^(full|normal)$",
        description="SQLite `synchronous` (WAL mode): `full` keeps every acknowledged write "
        "through a power loss; `normal` is faster and may lose the last commits then.",
    )
    allow_network_filesystem: bool = Field(
        False,
        description="Open the store on NFS/SMB and the like anyway (SQLite's WAL may corrupt "
        "there).",
    )
    max_file_bytes: int = Field(
        200 * 1_048_576,
        ge=1024,
        le=4096 * 1_048_576,
        description="Largest input file (OpenAI: 200 MB); a larger upload gets 413.",
    )
    max_lines: int = Field(
        50_000,
        ge=1,
        le=10_000_000,
        description="Most requests in one input file (OpenAI: 50,000); more fail validation.",
    )
    min_completion_window_s: float = Field(
        60.0,
        ge=1,
        le=86_400,
        description="Shortest `completion_window` accepted besides OpenAI's `24h` (an "
        "extension: `90s`, `30m`, `2h`).",
    )
    max_completion_window_s: float = Field(
        86_400.0,
        ge=86_400,
        le=30 * 86_400,
        description="Longest `completion_window` accepted (at least `24h`).",
    )
    lease_s: float = Field(
        60.0,
        gt=0,
        le=3600,
        description="How long a dispatcher worker holds a line without a heartbeat before "
        "another worker may run it again.",
    )
    heartbeat_s: float = Field(
        10.0, gt=0, le=600, description="How often a worker renews its leases (below lease_s)."
    )
    max_attempts: int = Field(
        3,
        ge=1,
        le=100,
        description="Leases a line may run out of before it goes to the error file "
        "(`attempts_exhausted`): a line that kills its worker does not run forever.",
    )
    max_in_flight: int = Field(
        64,
        ge=1,
        le=4096,
        description="Most lines one dispatcher has in flight at once: the ceiling of its pace, "
        "which grows by about one per round of answers and halves on 503.",
    )

    @model_validator(mode="after")
    def _heartbeat_within_lease(self) -> Self:
        if self.heartbeat_s >= self.lease_s:
            raise ValueError("batch.heartbeat_s must be below batch.lease_s")
        return self


# ---------------------------------------------------------------------------------- kubernetes

_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"


class WorkerGroupScaling(_Section):
    """One KubeRay worker group the controller may resize: its pods' hardware and its bounds."""

    name: str = Field(
        pattern=_NAME_PATTERN,
        max_length=40,
        description="The worker group's `groupName` in the RayCluster; its pods' Ray nodes carry "
        "it as their Gearshift node group.",
    )
    accelerator: str = Field(
        description="Accelerator catalog name of the group's GPUs (`gearshift catalog`), or CPU."
    )
    gpus_per_pod: int = Field(
        1, ge=0, le=16, description="GPUs each pod requests (`nvidia.com/gpu`); 0 for CPU groups."
    )
    min_replicas: int = Field(
        0, ge=0, le=10_000, description="Fewest pods the controller scales the group down to."
    )
    max_replicas: int = Field(
        1, ge=0, le=10_000, description="Most pods the controller scales the group up to."
    )
    price_per_pod_hour: float | None = Field(
        None,
        ge=0,
        description="What one pod costs per hour, for planning pods that do not run yet; unset: "
        "the mean of its running pods' prices (from their Nodes), else the catalog price times "
        "gpus_per_pod.",
    )
    ownership: Ownership = Field(
        Ownership.ON_DEMAND,
        description="How new pods of this group are paid for, for planning them before they "
        "exist; running pods report their Node's `gearshift.dev/capacity-type`.",
    )

    @field_validator("accelerator")
    @classmethod
    def _known_accelerator(cls, value: str) -> str:
        try:
            return accelerator(value).name
        except CatalogError as exc:
            raise ValueError(str(exc)) from None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas ({self.min_replicas}) is above max_replicas ({self.max_replicas})"
            )
        is_cpu = accelerator(self.accelerator).kind is AcceleratorKind.CPU
        if is_cpu and self.gpus_per_pod != 0:
            raise ValueError("a CPU worker group requests no GPUs: set gpus_per_pod: 0")
        if not is_cpu and self.gpus_per_pod == 0:
            raise ValueError(f"a {self.accelerator} worker group needs gpus_per_pod >= 1")
        return self


class KubernetesConfig(_Section):
    """The Kubernetes-aware controller: Node objects enrich the inventory (GPU Feature Discovery
    labels, price and capacity-type annotations) and worker groups of the KubeRay RayCluster
    are resized to what the plan needs."""

    enabled: bool = Field(
        False,
        description="Read Nodes and resize worker groups (the controller runs in Kubernetes, "
        "or `kubeconfig` points at a cluster).",
    )
    namespace: str = Field(
        "default",
        pattern=_DNS_LABEL,
        max_length=63,
        description="Namespace of the RayCluster.",
    )
    ray_cluster: str = Field(
        "gearshift",
        pattern=_DNS_SUBDOMAIN,
        max_length=253,
        description="Name of the KubeRay RayCluster whose worker groups are resized.",
    )
    kubeconfig: str | None = Field(
        None,
        min_length=1,
        description="A kubeconfig file (`~` allowed); unset: the pod's service account "
        "(in-cluster config).",
    )
    worker_groups: list[WorkerGroupScaling] = Field(
        default_factory=list,
        description="Worker groups the controller may resize; groups not listed are left alone.",
    )
    sync_interval_s: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="Seconds between reads of the Nodes and scaling decisions.",
    )
    scale_down_cooldown_s: float = Field(
        300.0,
        ge=0,
        le=86_400,
        description="A group shrinks only after wanting fewer pods for this long, and not "
        "within this long of growing (so it does not flap); growing is immediate.",
    )

    @field_validator("worker_groups")
    @classmethod
    def _unique_worker_groups(cls, groups: list[WorkerGroupScaling]) -> list[WorkerGroupScaling]:
        _require_unique([group.name for group in groups], "worker group names must be unique")
        return groups

    def worker_group(self, name: str) -> WorkerGroupScaling | None:
        return next((group for group in self.worker_groups if group.name == name), None)


# --------------------------------------------------------------------------------------- root


class WorkloadItem(_Section):
    """Demand the planner must cover for one model and class: a floor under observed traffic."""

    model: str = Field(description="A model of `models`.")
    traffic_class: TrafficClass = Field(
        alias="class", description="interactive, standard or batch."
    )
    rate_per_s: float = Field(ge=0, le=1_000_000, description="Requests per second.")
    prompt_tokens: int = Field(512, ge=1, le=10_000_000, description="Mean prompt tokens.")
    output_tokens: int = Field(128, ge=1, le=10_000_000, description="Mean output tokens.")

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class GearshiftConfig(_Section):
    """Root of a Gearshift config file."""

    fleet: FleetConfig = Field(default_factory=FleetConfig, description="The machines.")
    models: list[ModelConfig] = Field(default_factory=list, description="The served models.")
    traffic_classes: TrafficClassesConfig = Field(
        default_factory=TrafficClassesConfig, description="Targets per traffic class."
    )
    routing: RoutingConfig = Field(default_factory=RoutingConfig, description="Routing.")
    placement: PlacementConfig = Field(default_factory=PlacementConfig, description="Placement.")
    gateway: GatewayConfig = Field(default_factory=GatewayConfig, description="HTTP endpoints.")
    batch: BatchConfig = Field(
        default_factory=BatchConfig, description="The Batch API's store and limits."
    )
    kubernetes: KubernetesConfig = Field(
        default_factory=KubernetesConfig,
        description="Node inventory and worker-group scaling in Kubernetes (KubeRay).",
    )
    workload: list[WorkloadItem] = Field(
        default_factory=list,
        description="Expected demand per model and class; the cost solver sizes the fleet for "
        "it (observed traffic can only raise it).",
    )

    @field_validator("models")
    @classmethod
    def _unique_models(cls, models: list[ModelConfig]) -> list[ModelConfig]:
        names = [model.name for model in models]
        _require_unique(names, "model names must be unique")
        return models

    @model_validator(mode="after")
    def _workload_models(self) -> Self:
        known = {model.name for model in self.models}
        for item in self.workload:
            if item.model not in known:
                raise ValueError(f"workload names model `{item.model}`, which is not in `models`")
        pairs = [(item.model, item.traffic_class) for item in self.workload]
        _require_unique(
            [f"{m}/{c}" for m, c in pairs], "workload has one entry per model and class"
        )
        return self

    def model(self, name: str) -> ModelConfig | None:
        return next((model for model in self.models if model.name == name), None)


def parse_config(text: str, *, source: str = "<config>") -> GearshiftConfig:
    """Validate YAML text into a config; ``ConfigError`` lists every bad field by path."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping, not {type(data).__name__}")
    try:
        return GearshiftConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None


def load_config(path: str | Path) -> GearshiftConfig:
    """Read and validate a YAML config file."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read: {exc.strerror or exc}") from None
    return parse_config(text, source=str(file))


def demo_config_text() -> str:
    """The built-in demo fleet, shipped inside the package (and as examples/demo-fleet.yaml)."""
    return resources.files("scheduler").joinpath("demo_fleet.yaml").read_text(encoding="utf-8")


def demo_config() -> GearshiftConfig:
    return parse_config(demo_config_text(), source="built-in demo fleet")


def format_validation_error(exc: ValidationError, source: str) -> str:
    """One line per error: ``source: path.to.field: message``."""
    lines = [f"{source}: {exc.error_count()} invalid field(s)"]
    for error in exc.errors(include_url=False):
        path = ".".join(str(part) for part in error["loc"]) or "<root>"
        message = error["msg"].removeprefix("Value error, ")
        lines.append(f"  {path}: {message}")
    return "\n".join(lines)


def config_schema() -> dict[str, Any]:
    """JSON schema of the config file."""
    return GearshiftConfig.model_json_schema()
