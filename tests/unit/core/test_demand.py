"""The gateway's demand estimate: decayed rates per (model, class), summed across gateways."""

from __future__ import annotations

import math
import random

import pytest

from scheduler.framework.placement import ClassDemand
from scheduler.placement.demand import DemandTracker, combine
from scheduler.types import TrafficClass

INTER, BATCH = TrafficClass.INTERACTIVE, TrafficClass.BATCH


def _poisson(tracker: DemandTracker, rate: float, until: float, seed: int = 0) -> None:
    rng = random.Random(seed)
    now = 0.0
    while (now := now + rng.expovariate(rate)) < until:
        tracker.observe("m", INTER, 100, 50, now)


def test_a_steady_rate_is_estimated_after_a_few_half_lives() -> None:
    tracker = DemandTracker(half_life_s=60)
    _poisson(tracker, rate=5.0, until=600)
    (demand,) = tracker.snapshot(600)["m"]
    assert demand == ClassDemand(INTER, pytest.approx(5.0, rel=0.15), 100, 50)


def test_old_traffic_fades_with_the_half_life() -> None:
    tracker = DemandTracker(half_life_s=60)
    _poisson(tracker, rate=5.0, until=600)
    before = tracker.snapshot(600)["m"][0].rate_per_s
    after = tracker.snapshot(720)["m"][0].rate_per_s  # two half-lives of silence
    assert after == pytest.approx(before / 4, rel=1e-9)


def test_sizes_are_decayed_means_per_class() -> None:
    tracker = DemandTracker(half_life_s=10)
    tracker.observe("m", BATCH, 1000, 10, now=0.0)
    tracker.observe("m", BATCH, 3000, 30, now=0.0)
    tracker.observe("m", INTER, 10, 10, now=0.0)
    snapshot = tracker.snapshot(0.0)
    assert [(d.traffic_class, d.prompt_tokens, d.output_tokens) for d in snapshot["m"]] == [
        (BATCH, 2000, 20),
        (INTER, 10, 10),
    ]
    assert snapshot["m"][0].rate_per_s == pytest.approx(2 * math.log(2) / 10)


def test_gateways_reports_add_up() -> None:
    a = {"m": (ClassDemand(INTER, 2.0, 100, 10),)}
    b = {"m": (ClassDemand(INTER, 6.0, 500, 30), ClassDemand(BATCH, 1.0, 9, 9))}
    assert combine({"gw-a": a, "gw-b": b}) == {
        "m": (ClassDemand(BATCH, 1.0, 9, 9), ClassDemand(INTER, 8.0, 400, 25))
    }
    assert combine({}) == {}


def test_the_half_life_must_be_positive() -> None:
    with pytest.raises(ValueError, match="half_life_s"):
        DemandTracker(0)
