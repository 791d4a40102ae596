"""How many pods each KubeRay worker group should have, with the reason. Pure.

Growing is immediate, up to the group's max. Shrinking is careful, so that the fleet does not
flap and no replica loses its pod:

- it waits until the group has wanted fewer pods for ``cooldown_s`` without a break (so also
  that long after it last grew), then goes down to the most pods it wanted over that window;
- it removes only idle pods (no replica runs or is planned there), by name, so KubeRay deletes
  those and no others; pods KubeRay is already deleting are neither idle nor counted;
- it does not shrink while pods of the group have not joined Ray yet.

The bounds clamp both ways, and the reason says so. ``decide`` also returns the group's memory
for the next round, as it will be once the decision is applied (a shrink starts a new window,
so a further shrink waits the whole cooldown again); if applying fails, keep the old memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class GroupScale:
    """One worker group now, and how many of its pods the plan would use."""

    name: str
    accelerator: str
    replicas: int
    """``spec.replicas`` of the group now."""
    min_replicas: int
    max_replicas: int
    needed_pods: int
    """Pods of the group the plan would use if the group could grow to its max."""
    needed_accelerators: int
    """Accelerators those pods' replicas would use (replicas, for CPU groups)."""
    live_pods: tuple[str, ...] = ()
    """Pods whose Ray nodes joined (their Gearshift node ids)."""
    busy_pods: frozenset[str] = frozenset()
    """Pods that run a replica or that the current plan starts one on."""
    deleting_pods: frozenset[str] = frozenset()
    """Pods already named in ``scaleStrategy.workersToDelete``."""
    demand_unplaced: bool = False
    """That plan still leaves demand unplaced (the group at its max may be why)."""

    @property
    def serving_pods(self) -> tuple[str, ...]:
        return tuple(pod for pod in self.live_pods if pod not in self.deleting_pods)

    @property
    def pending(self) -> int:
        """Pods asked for that have not joined Ray yet."""
        return max(0, self.replicas - len(self.serving_pods))

    @property
    def idle_pods(self) -> tuple[str, ...]:
        """Pods that may go, in the order they would (by name, last first)."""
        return tuple(
            sorted((p for p in self.serving_pods if p not in self.busy_pods), reverse=True)
        )

    @property
    def busy(self) -> int:
        return sum(1 for pod in self.serving_pods if pod in self.busy_pods)

    @property
    def wanted(self) -> int:
        """Pods the group should have: what the plan uses, and never fewer than are busy."""
        return max(self.needed_pods, self.busy)


@dataclass(frozen=True, slots=True)
class GroupMemory:
    """What a group's decisions remember between rounds."""

    fewer_since: float | None = None
    """When the group started wanting fewer pods than it has (None: it does not)."""
    most_wanted: int = 0
    """The most pods it wanted since ``fewer_since``."""


@dataclass(frozen=True, slots=True)
class ScaleDecision:
    """Resize ``group`` from ``current`` to ``target`` pods (no change when they are equal)."""

    group: str
    current: int
    target: int
    reason: str
    workers_to_delete: tuple[str, ...] = field(default=())
    """The idle pods KubeRay must delete when the group shrinks."""

    @property
    def changed(self) -> bool:
        return self.target != self.current


def decide(
    group: GroupScale, memory: GroupMemory, now: float, cooldown_s: float
) -> tuple[ScaleDecision, GroupMemory]:
    """The group's decision this round and its memory for the next."""
    wanted = group.wanted
    bounded = min(max(wanted, group.min_replicas), group.max_replicas)
    why = f"the plan needs {_pods(wanted)} ({group.needed_accelerators} x {group.accelerator})"
    if group.busy > group.needed_pods:
        why = f"{_pods(wanted)} run or are about to run replicas"
    if bounded < wanted:
        why += f"; clamped at max_replicas {group.max_replicas}"
    elif bounded > wanted:
        why += f"; kept at min_replicas {group.min_replicas}"
    elif bounded == group.max_replicas and group.demand_unplaced:
        why += f"; at max_replicas {group.max_replicas}, with demand still unplaced"
    current = group.replicas
    if bounded >= current:
        verb = (
            f"{current} -> {_pods(bounded)}" if bounded > current else f"stays at {_pods(current)}"
        )
        decision = ScaleDecision(group.name, current, bounded, f"{group.name}: {verb}: {why}")
        return decision, GroupMemory()
    since = memory.fewer_since if memory.fewer_since is not None else now
    most = max(memory.most_wanted, bounded) if memory.fewer_since is not None else bounded
    remembered = GroupMemory(since, most)

    def hold(because: str) -> tuple[ScaleDecision, GroupMemory]:
        reason = f"{group.name}: stays at {_pods(current)}: {why}; {because}"
        return ScaleDecision(group.name, current, current, reason), remembered

    if group.pending:
        return hold(f"{group.pending} of its pods have not joined Ray yet")
    if now - since < cooldown_s:
        return hold(f"shrinking after {cooldown_s:g} s of wanting fewer ({now - since:g} s so far)")
    remove = group.idle_pods[: current - most]
    if not remove:
        return hold("no pod is idle")
    target = current - len(remove)
    reason = (
        f"{group.name}: {current} -> {_pods(target)}: {why} (for {cooldown_s:g} s); removing "
        f"idle {'pod' if len(remove) == 1 else 'pods'} {', '.join(remove)}"
    )
    if target > most:
        reason += f"; {target - most} more would go, but they are busy"
    return ScaleDecision(group.name, current, target, reason, remove), GroupMemory()


def _pods(count: int) -> str:
    return f"{count} pod" if count == 1 else f"{count} pods"
