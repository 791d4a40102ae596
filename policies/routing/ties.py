"""Tie groups for pickers: ranked replicas split where the score drops by more than epsilon."""

from __future__ import annotations

from collections.abc import Sequence

from scheduler.framework.routing import Scored


def tie_groups(ranked: Sequence[Scored], epsilon: float) -> list[list[str]]:
    """Replica ids of ``ranked`` (best first) in groups whose scores lie within ``epsilon`` of
    their group's best; groups stay in score order."""
    groups: list[list[str]] = []
    group_top: float | None = None
    for scored in ranked:
        if group_top is None or group_top - scored.score > epsilon:
            groups.append([])
            group_top = scored.score
        groups[-1].append(scored.endpoint.replica_id)
    return groups
