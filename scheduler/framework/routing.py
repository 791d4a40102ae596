"""Routing ports: the endpoint view policies see, and the Filter, Scorer and Picker Protocols.

Policies are synchronous and pure: they read the request, the candidate endpoints and the
per-request ``Cycle`` (which carries ``now`` and a seeded RNG) and return decisions. The
framework (``scheduler.routing.pipeline``) clamps, weights, times and explains them.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from scheduler.framework.plugin import Plugin, Rejection
from scheduler.types import Ownership, ReplicaState, TrafficClass


@dataclass(frozen=True, slots=True)
class PerfProfile:
    """What the performance model predicts for one replica, reduced to a few linear terms.

    ``decode_step_s(batch) = decode_step_base_s + (batch - 1) * decode_step_per_seq_s``.
    """

    prefill_tokens_per_s: float
    decode_step_base_s: float
    decode_step_per_seq_s: float
    kv_capacity_tokens: int
    max_num_seqs: int
    max_context: int

    def decode_step_s(self, batch: int) -> float:
        return self.decode_step_base_s + max(0, batch - 1) * self.decode_step_per_seq_s

    def prefill_s(self, prompt_tokens: int) -> float:
        return prompt_tokens / self.prefill_tokens_per_s


@dataclass(frozen=True, slots=True)
class EngineLoad:
    """Load of one engine: vLLM's scheduling signals plus the gateway's own in-flight count."""

    running: int = 0
    waiting: int = 0
    kv_usage: float = 0.0
    in_flight: int = 0
    fresh: bool = False
    """False until a scrape of the engine's /metrics has succeeded."""
    interactive: int = 0
    """Interactive requests on the engine that the router knows of (the gateway's own, which
    vLLM's metrics do not tell apart): batch yields to them."""
    interactive_until: float | None = None
    """When the engine last had an interactive request in flight (the routing clock,
    ``Cycle.now``); None if never. ``interactive > 0`` means now."""


@dataclass(frozen=True, slots=True)
class EndpointView:
    """One replica as routing sees it: identity, price, predicted speed and current load."""

    replica_id: str
    model: str
    accelerator: str
    node_id: str
    url: str
    state: ReplicaState
    price_per_hour: float
    ownership: Ownership
    perf: PerfProfile
    load: EngineLoad = field(default_factory=EngineLoad)

    @property
    def outstanding(self) -> int:
        """Requests on the engine: the scraped count, or the gateway's own if that is higher
        (a scrape lags requests the gateway has just sent)."""
        return max(self.load.running + self.load.waiting, self.load.in_flight)

    @property
    def queued(self) -> int:
        """Requests that must wait for a batch slot or KV space before their prefill."""
        return max(self.load.waiting, self.outstanding - self.perf.max_num_seqs)

    def serves_interactive(self, within_s: float, now: float) -> bool:
        """Interactive work is in flight here, or was less than ``within_s`` ago: lower
        classes yield this replica (backfill only what interactive traffic left idle)."""
        until = self.load.interactive_until
        return self.load.interactive > 0 or (until is not None and now - until < within_s)

    def predicted_ttft_s(self, prompt_tokens: int) -> float:
        """Time to first token if sent now, under continuous batching.

        The request waits for the step in flight (half of one, on average), then for the
        prefills queued ahead of it (assumed the size of this one), then its own prefill step,
        which reads every weight at least once: never shorter than a decode step of the batch
        it joins, however short the prompt.
        """
        running = min(self.outstanding, self.perf.max_num_seqs)
        in_flight = 0.5 * self.perf.decode_step_s(running) if running else 0.0
        own = max(self.perf.prefill_s(prompt_tokens), self.perf.decode_step_s(running + 1))
        return in_flight + self.queued * self.perf.prefill_s(prompt_tokens) + own

    def cost_per_token(self, batch: int) -> float:
        """Dollars per generated token when decoding ``batch`` sequences at once."""
        batch = max(1, min(batch, self.perf.max_num_seqs))
        tokens_per_s = batch / self.perf.decode_step_s(batch)
        return self.price_per_hour / 3600.0 / tokens_per_s


@dataclass(frozen=True, slots=True)
class RouteRequest:
    """The parts of a client request routing decides on."""

    model: str
    traffic_class: TrafficClass
    prompt_tokens: int
    max_tokens: int
    stream: bool = False
    ttft_target_s: float | None = None
    """The class's time-to-first-token target, if it has one."""
    yield_s: float | None = None
    """The class yields replicas that served interactive work within this many seconds
    (``EndpointView.serves_interactive``); None: it does not yield."""


@dataclass(slots=True)
class Cycle:
    """Per-request scratch space: the clock reading and RNG plugins must use."""

    now: float
    rng: random.Random
    sequence: int | None = None
    """How many requests for this request's model the router routed before this one (0, 1,
    2, ...), for pickers that take turns; None where the router does not count them."""


@dataclass(frozen=True, slots=True)
class FilterResult:
    """Endpoints kept, and a reasoned rejection for every endpoint dropped."""

    kept: tuple[EndpointView, ...]
    rejected: tuple[Rejection, ...] = ()


@dataclass(frozen=True, slots=True)
class Scored:
    """An endpoint with its weighted total score."""

    endpoint: EndpointView
    score: float


class Filter(Plugin, Protocol):
    def filter(
        self, request: RouteRequest, candidates: Sequence[EndpointView], cycle: Cycle
    ) -> FilterResult:
        """Keep feasible endpoints; every dropped one gets a Rejection. Must not mutate inputs."""
        ...


class Scorer(Plugin, Protocol):
    def score(
        self, request: RouteRequest, candidates: Sequence[EndpointView], cycle: Cycle
    ) -> Mapping[str, float]:
        """Preference in [0, 1] per replica id (missing means 0). The framework clamps."""
        ...


class Picker(Plugin, Protocol):
    def pick(
        self, request: RouteRequest, ranked: Sequence[Scored], cycle: Cycle
    ) -> tuple[str, ...]:
        """Ordered fallback list of replica ids, best first. ``ranked`` is sorted best first."""
        ...
