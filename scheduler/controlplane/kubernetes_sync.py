"""``KubernetesSync``: the one actor on Kubernetes. It reads the Nodes into the inventory and
resizes KubeRay worker groups as ``scheduler.kubernetes.scaling`` decides.

A ``step`` (at most once per ``kubernetes.sync_interval_s``) reads the RayCluster, plans once
more over the live nodes plus every pod each configured group could add, decides per group,
and patches the groups whose size changes. Each patch tests the group's name and replicas
first; on a conflict the sync re-reads the RayCluster, decides again from what it finds, and
tries again (three tries in all). It never raises ``KubernetesError``: a failure becomes a note
in the report (the status document's ``plan_notes``) and the next step starts afresh.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

from scheduler.config import GearshiftConfig, KubernetesConfig
from scheduler.framework.placement import NodeView, PlacementPlan
from scheduler.kubernetes.api import KubernetesApi, KubernetesConflict, KubernetesError
from scheduler.kubernetes.headroom import (
    BoundGroup,
    bound_groups,
    group_scales,
    headroom_nodes,
    planning_config,
)
from scheduler.kubernetes.node_inventory import NodeInventory, enriched_labels, read_inventory
from scheduler.kubernetes.ray_cluster import resize_patch
from scheduler.kubernetes.scaling import GroupMemory, ScaleDecision, decide

log = logging.getLogger(__name__)

CONFLICT_TRIES = 3

_Decided = tuple[ScaleDecision, GroupMemory]

PlanWith = Callable[[GearshiftConfig, Sequence[NodeView]], PlacementPlan]
"""Plans with the controller's solver, running replicas and demand over the given config and
nodes."""


@dataclass(frozen=True, slots=True)
class SyncReport:
    """What the last step decided and did."""

    at: float | None = None
    decisions: tuple[ScaleDecision, ...] = ()
    resized: tuple[str, ...] = ()
    """Groups whose RayCluster entry was patched."""
    notes: tuple[str, ...] = ()
    """Inventory warnings and defaults, groups not resized and why, API failures."""

    def lines(self) -> tuple[str, ...]:
        """Everything for operators: one line per decision, then the notes."""
        return (*(decision.reason for decision in self.decisions), *self.notes)


class KubernetesSync:
    """Node inventory and worker-group scaling against one RayCluster. Not thread-safe: one
    caller (the controller's reconcile loop) at a time."""

    def __init__(self, settings: KubernetesConfig, api: KubernetesApi) -> None:
        self.settings = settings
        self.api = api
        self.inventory = NodeInventory()
        self.report = SyncReport()
        self.memory: dict[str, GroupMemory] = {}
        self._nodes_read_at: float | None = None
        self._node_notes: tuple[str, ...] = ()

    # ------------------------------------------------------------------ inventory

    def refresh(self, now: float) -> None:
        """Re-read the Nodes if none were read within ``sync_interval_s``; on failure keep the
        last inventory and say so in the notes."""
        if self._nodes_read_at is not None and now - self._nodes_read_at < self._interval:
            return
        self._nodes_read_at = now
        try:
            self.inventory = read_inventory(self.api.list_nodes())
        except KubernetesError as exc:
            log.warning("cannot list Nodes: %s", exc)
            self._node_notes = (f"cannot list Nodes (keeping the last inventory): {exc}",)
            return
        self._node_notes = self.inventory.summary()
        for warning in self.inventory.warnings:
            log.warning("%s", warning)

    def relabel(self, labels: Mapping[str, str], resources: Mapping[str, float]) -> dict[str, str]:
        """A Ray node's labels enriched from its Node (see ``enriched_labels``)."""
        gpus = int(resources.get("GPU", 0))
        return enriched_labels(labels, gpus, self.inventory, self.settings.worker_groups)

    # -------------------------------------------------------------------- scaling

    def step(
        self,
        now: float,
        *,
        config: GearshiftConfig,
        nodes: Sequence[NodeView],
        busy: Collection[str],
        plan_with: PlanWith,
    ) -> SyncReport:
        """Decide and apply this round's resizes, at most once per ``sync_interval_s``.

        ``config`` is the controller's (with the groups of joined nodes); ``nodes`` the live
        nodes; ``busy`` the node ids that run a replica or that the plan starts one on.
        """
        if self.report.at is not None and now - self.report.at < self._interval:
            return self.report
        if not self.settings.worker_groups:
            self.report = SyncReport(at=now, notes=self._node_notes)
            return self.report
        notes = list(self._node_notes)
        try:
            cluster = self.api.get_ray_cluster(self.settings.namespace, self.settings.ray_cluster)
        except KubernetesError as exc:
            log.warning("cannot read the RayCluster: %s", exc)
            self.report = SyncReport(at=now, notes=(*notes, f"cannot read the RayCluster: {exc}"))
            return self.report
        groups, bound_notes = bound_groups(self.settings.worker_groups, cluster)
        notes += bound_notes
        if not groups:
            self.report = SyncReport(at=now, notes=tuple(notes))
            return self.report
        planning = planning_config(config, self.settings.worker_groups)
        headroom = headroom_nodes(groups, planning, nodes)
        what_if = plan_with(planning, [*nodes, *headroom])
        decisions: list[ScaleDecision] = []
        resized: list[str] = []
        for group in groups:
            memory = self.memory.get(group.settings.name, GroupMemory())

            def decide_for(group: BoundGroup, memory: GroupMemory = memory) -> _Decided:
                scale = group_scales([group], nodes, busy, what_if, headroom)[0]
                return decide(scale, memory, now, self.settings.scale_down_cooldown_s)

            decision, after = decide_for(group)
            if decision.changed:
                decision, after, failure = self._resize(group, decision, after, decide_for)
                if failure:
                    notes.append(failure)
                    after = memory  # nothing changed: the next step decides from here again
                elif decision.changed:
                    resized.append(group.settings.name)
            self.memory[group.settings.name] = after
            decisions.append(decision)
        self.report = SyncReport(now, tuple(decisions), tuple(resized), tuple(notes))
        return self.report

    def _resize(
        self,
        group: BoundGroup,
        decision: ScaleDecision,
        after: GroupMemory,
        decide_for: Callable[[BoundGroup], _Decided],
    ) -> tuple[ScaleDecision, GroupMemory, str]:
        """Patch the group to ``decision``; on a conflict re-read, decide again and retry.
        Returns the decision applied (or last tried), its memory, and a failure note (empty
        on success)."""
        namespace, name = self.settings.namespace, self.settings.ray_cluster
        for attempt in range(1, CONFLICT_TRIES + 1):
            patch = resize_patch(group.view, decision.target, decision.workers_to_delete)
            try:
                self.api.patch_ray_cluster(namespace, name, patch)
            except KubernetesConflict as exc:
                log.info("%s: conflict on try %d: %s", group.settings.name, attempt, exc)
            except KubernetesError as exc:
                log.warning("cannot resize %s: %s", group.settings.name, exc)
                return decision, after, f"{group.settings.name}: cannot patch the RayCluster: {exc}"
            else:
                log.info("%s", decision.reason)
                return decision, after, ""
            try:
                fresh = self.api.get_ray_cluster(namespace, name)
            except KubernetesError as exc:
                note = f"{group.settings.name}: cannot re-read the RayCluster: {exc}"
                return decision, after, note
            regrouped, _ = bound_groups([group.settings], fresh)
            if not regrouped:
                note = f"{group.settings.name}: left the RayCluster during the resize"
                return decision, after, note
            group = regrouped[0]
            decision, after = decide_for(group)
            if not decision.changed:
                return decision, after, ""
        note = (
            f"{group.settings.name}: not resized: {CONFLICT_TRIES} tries met conflicting "
            "writes to the RayCluster; the next sync tries again"
        )
        return decision, after, note

    @property
    def _interval(self) -> float:
        return self.settings.sync_interval_s
