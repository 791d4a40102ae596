"""``round-robin-picker``: turns by the cycle's sequence among tied replicas, score order kept."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from scheduler.framework.routing import Cycle, EndpointView, Picker, Scored

MakePlugin = Callable[..., Any]
MakeEndpoint = Callable[..., EndpointView]


def _ranked(make_endpoint: MakeEndpoint, scores: dict[str, float]) -> list[Scored]:
    ranked = [Scored(make_endpoint(rid), score) for rid, score in scores.items()]
    return sorted(ranked, key=lambda s: (-s.score, s.endpoint.replica_id))


def _cycle(sequence: int | None, seed: int = 0) -> Cycle:
    return Cycle(now=0.0, rng=random.Random(seed), sequence=sequence)


@pytest.mark.parametrize(
    ("params", "scores", "sequence", "expected"),
    [
        # no scorers: every replica ties, the n-th request starts at the (n mod 3)-th id
        ({}, {"c": 0.0, "a": 0.0, "b": 0.0}, 0, ("a", "b", "c")),
        ({}, {"c": 0.0, "a": 0.0, "b": 0.0}, 1, ("b", "c", "a")),
        ({}, {"c": 0.0, "a": 0.0, "b": 0.0}, 5, ("c", "a", "b")),
        ({"fallbacks": 0}, {"a": 0.0, "b": 0.0}, 3, ("b",)),
        # a better score always goes first; the tied rest take turns behind it
        ({"fallbacks": 3}, {"a": 0.2, "b": 0.9, "c": 0.2, "d": 0.2}, 1, ("b", "c", "d", "a")),
        # distinct scores: score order whatever the turn
        ({"fallbacks": 2}, {"a": 0.1, "b": 0.5, "c": 0.3}, 7, ("b", "c", "a")),
        # within tie_epsilon counts as a tie
        ({"tie_epsilon": 0.05}, {"a": 0.5, "b": 0.48, "c": 0.1}, 1, ("b", "a", "c")),
    ],
)
def test_round_robin_picker_order(
    make_plugin: MakePlugin,
    make_endpoint: MakeEndpoint,
    make_request: Callable[..., Any],
    params: dict[str, Any],
    scores: dict[str, float],
    sequence: int,
    expected: tuple[str, ...],
) -> None:
    plugin = make_plugin("round-robin-picker", Picker, **params)
    ranked = _ranked(make_endpoint, scores)
    assert plugin.pick(make_request(), ranked, _cycle(sequence)) == expected


def test_consecutive_sequence_numbers_spread_requests_evenly(
    make_plugin: MakePlugin, make_endpoint: MakeEndpoint, make_request: Callable[..., Any]
) -> None:
    plugin = make_plugin("round-robin-picker", Picker)
    ranked = _ranked(make_endpoint, {f"r{i}": 0.0 for i in range(4)})
    firsts = [plugin.pick(make_request(), ranked, _cycle(n))[0] for n in range(12)]
    assert firsts == ["r0", "r1", "r2", "r3"] * 3


def test_without_a_sequence_the_turn_comes_from_the_cycle_rng(
    make_plugin: MakePlugin, make_endpoint: MakeEndpoint, make_request: Callable[..., Any]
) -> None:
    plugin = make_plugin("round-robin-picker", Picker, fallbacks=0)
    ranked = _ranked(make_endpoint, {f"r{i}": 1.0 for i in range(3)})
    firsts: Counter[str] = Counter()
    for seed in range(60):
        pick = plugin.pick(make_request(), ranked, _cycle(None, seed))
        assert pick == plugin.pick(make_request(), ranked, _cycle(None, seed))
        firsts[pick[0]] += 1
    assert set(firsts) == {"r0", "r1", "r2"}
