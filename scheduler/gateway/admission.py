"""Admission: per-class queues between routing and the proxy, strict priority, shedding.

Pure core, ``AdmissionPolicy``: bounded queues per traffic class, a state machine whose every
method takes the time or the saturation it needs (no clock, no I/O). A request is dispatched
when its class's gate is open (the model's fleet saturation is below the class's threshold;
interactive has none) and nothing of its own or a higher class waits for the same model.
Within a class the queue is fair among tenants: start-time fair queuing (each request a unit
of work), so a tenant that floods a class waits behind its own backlog, not in front of
everyone else's; one tenant alone is plain FIFO. Queues are bounded per class and in total;
when the total is full, a higher class evicts the youngest request of the lowest class
waiting, so batch is shed before interactive waits.

Thin edge, ``AdmissionGate``: one asyncio future per waiting request and one pump task (alive
only while something waits) that expires and grants every ``dispatch_interval_s``.
"""

from __future__ import annotations

import asyncio
import bisect
import enum
import itertools
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from starlette.requests import ClientDisconnect

from scheduler.config import AdmissionConfig
from scheduler.errors import NoCapacity
from scheduler.framework.routing import EndpointView
from scheduler.types import ReplicaState, TrafficClass

PRIORITY: tuple[TrafficClass, ...] = (
    TrafficClass.INTERACTIVE,
    TrafficClass.STANDARD,
    TrafficClass.BATCH,
)
"""Classes, most urgent first."""

Saturation = Callable[[str, TrafficClass], float]
"""A model's fleet saturation as a class sees it (0 idle, 1 full)."""

DISCONNECT_POLL_S = 1.0
"""How often a waiting request checks whether its client is still there (a queued request holds
no engine work, so a second is soon enough; hundreds of queued batch requests polling ten times
a second cost the event loop interactive requests wait on)."""


def replica_saturation(endpoint: EndpointView, full_queue_depth: int) -> float:
    """max(KV usage, busy batch slots ÷ ``max_num_seqs``, queued ÷ ``full_queue_depth``), in
    [0, 1]: a replica is full when its KV cache or its batch slots are, or requests queue."""
    slots = max(1, endpoint.perf.max_num_seqs)
    busy = min(endpoint.outstanding, slots) / slots
    queued = endpoint.queued / full_queue_depth
    return min(1.0, max(0.0, endpoint.load.kv_usage, busy, queued))


def fleet_saturation(
    candidates: Sequence[EndpointView],
    full_queue_depth: int,
    *,
    yield_s: float | None = None,
    now: float = 0.0,
) -> float:
    """Mean saturation of the model's ready replicas a class may use, in [0, 1]; 1 when it
    may use none. With ``yield_s``, replicas serving interactive work (``serves_interactive``)
    are not the class's to use."""
    ready = [
        e
        for e in candidates
        if e.state is ReplicaState.READY
        and (yield_s is None or not e.serves_interactive(yield_s, now))
    ]
    if not ready:
        return 1.0
    return sum(replica_saturation(e, full_queue_depth) for e in ready) / len(ready)


@dataclass(frozen=True, slots=True, eq=False)
class Ticket:
    """One request waiting (identity, not value, equality: two equal requests are two)."""

    model: str
    traffic_class: TrafficClass
    size_bytes: int
    enqueued_at: float
    seq: int
    tenant: str = ""
    tag: float = 0.0
    """Its start tag in the class's fair queue: granted in (tag, seq) order."""


class Verdict(enum.Enum):
    ADMIT = "admit"
    """Dispatch now."""
    QUEUED = "queued"
    """Wait for ``grant``, ``expire`` or eviction."""
    REJECT = "reject"
    """Answer 503 at once; ``Offer.code`` says why."""


@dataclass(frozen=True, slots=True)
class Offer:
    """What ``AdmissionPolicy.offer`` decided, and whom it evicted to make room."""

    verdict: Verdict
    ticket: Ticket | None = None
    code: str | None = None
    reason: str = ""
    evicted: tuple[Ticket, ...] = ()


@dataclass
class AdmissionPolicy:
    """Bounded per-class FIFO queues. Invariants: total and per-class counts and bytes never
    exceed their limits; a ticket is in at most one queue; tickets leave only through
    ``grant``, ``expire``, ``remove`` or eviction by ``offer``."""

    config: AdmissionConfig
    _queues: dict[TrafficClass, dict[int, Ticket]] = field(
        default_factory=lambda: {c: {} for c in PRIORITY}
    )
    _bytes: Counter[TrafficClass] = field(default_factory=Counter)
    _waiting: Counter[tuple[str, TrafficClass]] = field(default_factory=Counter)
    _seq: itertools.count[int] = field(default_factory=itertools.count)
    _order: dict[TrafficClass, list[tuple[float, int]]] = field(
        default_factory=lambda: {c: [] for c in PRIORITY}
    )
    """Each class's queued (tag, seq), sorted: the fair order grants follow."""
    _virtual: dict[tuple[str, TrafficClass], float] = field(default_factory=dict)
    """Per model and class: the tag of the last ticket granted (fair queuing's virtual time)."""
    _last_tag: dict[tuple[str, TrafficClass, str], float] = field(default_factory=dict)
    """Per model, class and tenant: the tag of its latest queued ticket."""

    def queued(self, traffic_class: TrafficClass | None = None) -> int:
        if traffic_class is None:
            return sum(len(queue) for queue in self._queues.values())
        return len(self._queues[traffic_class])

    def gate_open(self, traffic_class: TrafficClass, saturation: float) -> bool:
        threshold = self.config.limits(traffic_class).saturation_threshold
        return threshold is None or saturation < threshold

    def offer(
        self,
        model: str,
        traffic_class: TrafficClass,
        size_bytes: int,
        saturation: float,
        now: float,
        tenant: str = "",
    ) -> Offer:
        """Admit now, queue (evicting lower classes if the total is full) or reject."""
        ahead = any(self._waiting[model, c] for c in PRIORITY[: PRIORITY.index(traffic_class) + 1])
        if not ahead and self.gate_open(traffic_class, saturation):
            return Offer(Verdict.ADMIT)
        limits = self.config.limits(traffic_class)
        own = self._queues[traffic_class]
        if len(own) + 1 > limits.max_queued or self._bytes[traffic_class] + size_bytes > (
            limits.max_queued_bytes
        ):
            return Offer(
                Verdict.REJECT,
                code="queue_full",
                reason=f"The {traffic_class.value} queue is full "
                f"({len(own)} requests, {self._bytes[traffic_class]} bytes).",
            )
        evicted: list[Ticket] = []
        while not self._total_fits(size_bytes):
            victim = self._youngest_below(traffic_class)
            if victim is None:
                for ticket in evicted:  # undo: nothing is shed for a request that is refused
                    self._push(ticket)
                return Offer(
                    Verdict.REJECT,
                    code="queue_full",
                    reason="The gateway's queues are full.",
                )
            self._pop(victim)
            evicted.append(victim)
        flow = model, traffic_class
        tag = max(self._virtual.get(flow, 0.0), self._last_tag.get((*flow, tenant), 0.0)) + 1.0
        self._last_tag[model, traffic_class, tenant] = tag
        ticket = Ticket(model, traffic_class, size_bytes, now, next(self._seq), tenant, tag)
        self._push(ticket)
        return Offer(Verdict.QUEUED, ticket=ticket, evicted=tuple(evicted))

    def grant(self, saturation: Saturation) -> list[Ticket]:
        """Tickets to dispatch now, most urgent first: per model, a class goes only when no
        higher class waits; fair among tenants within a class (FIFO for one tenant); at most
        one gated ticket per model per call
        (loads change once it is dispatched). ``saturation`` is read once per model and
        class."""
        levels: dict[tuple[str, TrafficClass], float] = {}
        blocked: set[str] = set()
        granted: list[Ticket] = []
        dispatched: set[str] = set()
        for traffic_class in PRIORITY:
            gated = self.config.limits(traffic_class).saturation_threshold is not None
            queue = self._queues[traffic_class]
            for _, seq in list(self._order[traffic_class]):
                ticket = queue[seq]
                model = ticket.model
                if model in blocked or model in dispatched:
                    continue
                if (model, traffic_class) not in levels:
                    levels[model, traffic_class] = saturation(model, traffic_class)
                if self.gate_open(traffic_class, levels[model, traffic_class]):
                    self._pop(ticket)
                    self._advance(ticket)
                    granted.append(ticket)
                    if gated:
                        dispatched.add(model)
                else:
                    blocked.add(model)
            blocked |= {m for m, c in self._waiting if c is traffic_class and self._waiting[m, c]}
        return granted

    def expire(self, now: float) -> list[Ticket]:
        """Tickets that waited their class's ``queue_ttl_s`` or longer, removed."""
        expired: list[Ticket] = []
        for traffic_class, queue in self._queues.items():
            ttl = self.config.limits(traffic_class).queue_ttl_s
            for ticket in queue.values():  # FIFO: the oldest first
                if now - ticket.enqueued_at < ttl:
                    break
                expired.append(ticket)
        for ticket in expired:
            self._pop(ticket)
        return expired

    def remove(self, ticket: Ticket) -> bool:
        """Take a ticket out (its client left); False when it is no longer queued."""
        if ticket.seq not in self._queues[ticket.traffic_class]:
            return False
        self._pop(ticket)
        return True

    def _total_fits(self, size_bytes: int) -> bool:
        return (
            self.queued() + 1 <= self.config.max_queued_total
            and sum(self._bytes.values()) + size_bytes <= self.config.max_queued_bytes_total
        )

    def _youngest_below(self, traffic_class: TrafficClass) -> Ticket | None:
        for lower in reversed(PRIORITY[PRIORITY.index(traffic_class) + 1 :]):
            queue = self._queues[lower]
            if queue:
                return queue[next(reversed(queue))]
        return None

    def _advance(self, granted: Ticket) -> None:
        """Fair queuing's virtual time moves to the granted tag; tenants with nothing queued
        at or beyond it are forgotten (a new ticket of theirs starts from it anyway)."""
        flow = granted.model, granted.traffic_class
        self._virtual[flow] = max(self._virtual.get(flow, 0.0), granted.tag)
        if not self._waiting[flow]:
            self._virtual.pop(flow)
            for key in [k for k in self._last_tag if k[:2] == flow]:
                del self._last_tag[key]

    def _push(self, ticket: Ticket) -> None:
        queue = self._queues[ticket.traffic_class]
        queue[ticket.seq] = ticket
        if next(reversed(queue)) != ticket.seq:  # an undone eviction goes back in FIFO order
            self._queues[ticket.traffic_class] = dict(sorted(queue.items()))
        bisect.insort(self._order[ticket.traffic_class], (ticket.tag, ticket.seq))
        self._bytes[ticket.traffic_class] += ticket.size_bytes
        self._waiting[ticket.model, ticket.traffic_class] += 1

    def _pop(self, ticket: Ticket) -> None:
        del self._queues[ticket.traffic_class][ticket.seq]
        order = self._order[ticket.traffic_class]
        del order[bisect.bisect_left(order, (ticket.tag, ticket.seq))]
        self._bytes[ticket.traffic_class] -= ticket.size_bytes
        key = ticket.model, ticket.traffic_class
        self._waiting[key] -= 1
        if self._waiting[key] <= 0:
            del self._waiting[key]


class Release(enum.Enum):
    GRANTED = "granted"
    EXPIRED = "expired"
    EVICTED = "evicted"


@dataclass(frozen=True, slots=True)
class Admitted:
    queued: bool
    """True when the request waited: its routing decision is stale, route again."""
    waited_s: float


class AdmissionGate:
    """The asyncio side of ``AdmissionPolicy``: waits, never blocks the loop, never hangs past
    a class's TTL (plus one ``dispatch_interval_s``)."""

    def __init__(
        self,
        config: AdmissionConfig,
        saturation: Saturation,
        *,
        retry_after_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = AdmissionPolicy(config)
        self._config = config
        self._saturation = saturation
        self._retry_after_s = retry_after_s
        self._clock = clock
        self._waiters: dict[Ticket, asyncio.Future[Release]] = {}
        self._pump: asyncio.Task[None] | None = None

    async def admit(
        self,
        model: str,
        traffic_class: TrafficClass,
        size_bytes: int,
        is_disconnected: Callable[[], Awaitable[bool]],
        tenant: str = "",
    ) -> Admitted:
        """Return once the request may go to an engine. Raises ``NoCapacity`` (503 with
        Retry-After: ``queue_full``, ``queue_timeout``, ``shed``) or ``ClientDisconnect``."""
        started = self._clock()
        offer = self.policy.offer(
            model,
            traffic_class,
            size_bytes,
            self._saturation(model, traffic_class),
            started,
            tenant,
        )
        for victim in offer.evicted:
            self._resolve(victim, Release.EVICTED)
        if offer.verdict is Verdict.ADMIT:
            return Admitted(queued=False, waited_s=0.0)
        if offer.verdict is Verdict.REJECT or offer.ticket is None:
            raise NoCapacity(
                offer.reason, retry_after_s=self._retry_after_s, code=offer.code or "queue_full"
            )
        ticket = offer.ticket
        future: asyncio.Future[Release] = asyncio.get_running_loop().create_future()
        self._waiters[ticket] = future
        if self._pump is None or self._pump.done():
            self._pump = asyncio.create_task(self._run())
        try:
            while not future.done():
                await asyncio.wait({future}, timeout=DISCONNECT_POLL_S)
                if not future.done() and await is_disconnected():
                    raise ClientDisconnect()
        finally:
            self._waiters.pop(ticket, None)
            if not future.done():
                self.policy.remove(ticket)
        release = future.result()
        if release is Release.GRANTED:
            return Admitted(queued=True, waited_s=self._clock() - started)
        ttl = self._config.limits(traffic_class).queue_ttl_s
        if release is Release.EXPIRED:
            raise NoCapacity(
                f"The request waited {ttl:g} s in the {traffic_class.value} queue without "
                "capacity to run it.",
                retry_after_s=self._retry_after_s,
                code="queue_timeout",
            )
        raise NoCapacity(
            f"The {traffic_class.value} request was shed to make room for more urgent traffic.",
            retry_after_s=self._retry_after_s,
            code="shed",
        )

    def _resolve(self, ticket: Ticket, release: Release) -> None:
        future = self._waiters.get(ticket)
        if future is not None and not future.done():
            future.set_result(release)

    async def _run(self) -> None:
        while self.policy.queued():
            for ticket in self.policy.expire(self._clock()):
                self._resolve(ticket, Release.EXPIRED)
            for ticket in self.policy.grant(self._saturation):
                self._resolve(ticket, Release.GRANTED)
            await asyncio.sleep(self._config.dispatch_interval_s)
