"""``RoutingProfile.run``, ``RoutingDecision.raise_if_empty`` and ``build_profiles``.

The framework tests use tiny scripted plugins so each one pins one duty of the pipeline
(clamp, weight, record, stop); the end-to-end tests run the default profiles from the default
``RoutingConfig`` over endpoints whose numbers come from the performance model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import pytest
from pydantic import ValidationError

from scheduler.config import GearshiftConfig, PluginSpec, ProfileSpec, RoutingConfig, WeightedRef
from scheduler.errors import ConfigError, InvalidRequest, NoCapacity
from scheduler.framework.plugin import Rejection, Verdict
from scheduler.framework.routing import (
    Cycle,
    EndpointView,
    FilterResult,
    RouteRequest,
    Scored,
)
from scheduler.plugins import PluginRegistry
from scheduler.routing.pipeline import RoutingDecision, RoutingProfile, WeightedScorer
from scheduler.routing.profiles import build_profiles
from scheduler.types import ReplicaState, TrafficClass

MakeEndpoint = Callable[..., EndpointView]


# ------------------------------------------------------------------------- scripted plugins


@dataclass
class DropFilter:
    """Rejects the listed replica ids with a fixed verdict; records every call."""

    TYPE: ClassVar[str] = "drop-filter"
    name: str
    drop: frozenset[str]
    verdict: Verdict = Verdict.UNFIT
    plugin_field: str = ""
    calls: list[tuple[str, ...]] = field(default_factory=list)

    def filter(
        self, request: RouteRequest, candidates: Sequence[EndpointView], cycle: Cycle
    ) -> FilterResult:
        self.calls.append(tuple(e.replica_id for e in candidates))
        return FilterResult(
            tuple(e for e in candidates if e.replica_id not in self.drop),
            tuple(
                Rejection(e.replica_id, self.verdict, f"{self.name} said no", self.plugin_field)
                for e in candidates
                if e.replica_id in self.drop
            ),
        )


@dataclass
class FixedScorer:
    TYPE: ClassVar[str] = "fixed-scorer"
    name: str
    values: dict[str, float]
    calls: int = 0

    def score(
        self, request: RouteRequest, candidates: Sequence[EndpointView], cycle: Cycle
    ) -> Mapping[str, float]:
        self.calls += 1
        ids = {e.replica_id for e in candidates}
        return {rid: v for rid, v in self.values.items() if rid in ids}


@dataclass
class RecordingPicker:
    """Returns every ranked id in the order given, and remembers what it saw."""

    TYPE: ClassVar[str] = "recording-picker"
    name: str = "pick"
    seen: list[list[tuple[str, float]]] = field(default_factory=list)

    def pick(
        self, request: RouteRequest, ranked: Sequence[Scored], cycle: Cycle
    ) -> tuple[str, ...]:
        self.seen.append([(s.endpoint.replica_id, s.score) for s in ranked])
        return tuple(s.endpoint.replica_id for s in ranked)


def _endpoints(make_endpoint: MakeEndpoint, *ids: str) -> list[EndpointView]:
    return [make_endpoint(rid) for rid in ids]


# ------------------------------------------------------------------------------------- run


@pytest.mark.parametrize(
    ("raw", "clamped"),
    [(-0.5, 0.0), (0.0, 0.0), (0.25, 0.25), (1.0, 1.0), (1.7, 1.0), (float("inf"), 1.0),
     (float("-inf"), 0.0), (float("nan"), 0.0)],
)
def test_run_clamps_scores_into_unit_interval(
    make_endpoint: MakeEndpoint, make_request: Callable[..., RouteRequest], cycle: Cycle,
    raw: float, clamped: float,
) -> None:
    scorer = FixedScorer("s", {"a": raw, "b": 0.5})
    profile = RoutingProfile("p", (), (WeightedScorer(scorer, 2.0),), RecordingPicker())
    decision = profile.run(make_request(), _endpoints(make_endpoint, "a", "b"), cycle)
    assert decision.scores["s"]["a"] == clamped
    assert decision.totals["a"] == pytest.approx(2.0 * clamped)


def test_run_applies_weights_and_ranks_by_total(
    make_endpoint: MakeEndpoint, make_request: Callable[..., RouteRequest], cycle: Cycle
) -> None:
    fast = FixedScorer("fast", {"a": 1.0, "b": 0.2, "c": 0.6})
    cheap = FixedScorer("cheap", {"a": 0.1, "b": 1.0, "c": 0.6})
    picker = RecordingPicker()
    profile = RoutingProfile(
        "p", (), (WeightedScorer(fast, 1.0), WeightedScorer(cheap, 3.0)), picker
    )
    decision = profile.run(make_request(), _endpoints(make_endpoint, "a", "b", "c"), cycle)

    expected = {"a": 1.0 + 0.3, "b": 0.2 + 3.0, "c": 0.6 + 1.8}
    assert decision.totals == pytest.approx(expected)
    assert decision.picks == ("b", "c", "a")
    assert [rid for rid, _ in picker.seen[0]] == ["b", "c", "a"], "ranked must be best first"
    assert decision.scores == {"fast": fast.values, "cheap": cheap.values}
    assert set(decision.durations_s) == {"fast", "cheap", "pick"}


def test_run_reads_a_missing_score_as_zero(
    make_endpoint: MakeEndpoint, make_request: Callable[..., RouteRequest], cycle: Cycle
) -> None:
    profile = RoutingProfile(
        "p", (), (WeightedScorer(FixedScorer("s", {"b": 0.4}), 1.0),), RecordingPicker()
    )
    decision = profile.run(make_request(), _endpoints(make_endpoint, "a", "b"), cycle)
    assert decision.scores["s"] == {"a": 0.0, "b": 0.4}
    assert decision.picks == ("b", "a")


def test_run_breaks_equal_totals_by_replica_id(
    make_endpoint: MakeEndpoint, make_request: Callable[..., RouteRequest], cycle: Cycle
) -> None:
    picker = RecordingPicker()
    profile = RoutingProfile("p", (), (), picker)
    profile.run(make_request(), _endpoints(make_endpoint, "c", "a", "b"), cycle)
    assert picker.seen == [[("a", 0.0), ("b", 0.0), ("c", 0.0)]]


def test_run_records_rejections_with_the_plugin_instance_name(
    make_endpoint: MakeEndpoint, make_request: Callable[..., RouteRequest], cycle: Cycle
) -> None:
    first = DropFilter("first-instance", frozenset({"a"}))
    second = DropFilter("second-instance", frozenset({"b"}), plugin_field="own-code")
    profile = RoutingProfile("p", (first, second), (), RecordingPicker())

    decision = profile.run(make_request(), _endpoints(make_endpoint, "a", "b", "c"), cycle)

    assert decision.picks == ("c",)
    assert decision.rejections == (
        Rejection("a", Verdict.UNFIT, "first-instance said no", "first-instance"),
        # A plugin that names itself (or a code) keeps what it set.
        Rejection("b", Verdict.UNFIT, "second-instance said no", "own-code"),
    )
    assert second.calls == [("b", "c")], "later filters see only what earlier ones kept"


def test_run_stops_when_nothing_is_left(
    make_endpoint: MakeEndpoint, make_request: Callable[..., RouteRequest], cycle: Cycle
) -> None:
    everything = DropFilter("all", frozenset({"a", "b"}), Verdict.UNRESOLVABLE)
    never = DropFilter("never-called", frozenset())
    scorer = FixedScorer("s", {})
    picker = RecordingPicker()
    profile = RoutingProfile("p", (everything, never), (WeightedScorer(scorer, 1.0),), picker)

    decision = profile.run(make_request(), _endpoints(make_endpoint, "a", "b"), cycle)

    assert decision.picks == ()
    assert [r.subject for r in decision.rejections] == ["a", "b"]
    assert never.calls == [] and scorer.calls == 0 and picker.seen == []
    assert set(decision.durations_s) == {"all"}


def test_run_with_no_candidates_calls_no_plugin(
    make_request: Callable[..., RouteRequest], cycle: Cycle
) -> None:
    never = DropFilter("f", frozenset())
    picker = RecordingPicker()
    decision = RoutingProfile("p", (never,), (), picker).run(make_request(), [], cycle)
    assert decision.picks == () and decision.rejections == ()
    assert never.calls == [] and picker.seen == []


# -------------------------------------------------------------------------- raise_if_empty


def _decision(picks: tuple[str, ...], *verdicts: Verdict) -> RoutingDecision:
    rejections = tuple(
        Rejection(f"r{i}", verdict, f"reason {i}", f"plugin-{i}", code=f"code-{i}")
        for i, verdict in enumerate(verdicts)
    )
    return RoutingDecision("standard", picks, rejections)


def test_raise_if_empty_passes_when_something_was_picked() -> None:
    _decision(("r9",), Verdict.UNRESOLVABLE).raise_if_empty(1.0)


def test_raise_if_empty_all_unresolvable_is_an_invalid_request() -> None:
    decision = _decision((), Verdict.UNRESOLVABLE, Verdict.UNRESOLVABLE)
    with pytest.raises(InvalidRequest) as caught:
        decision.raise_if_empty(1.0)
    assert caught.value.message == "reason 0"
    assert caught.value.code == "code-0"  # the rejection's code, never a plugin instance name
    assert not isinstance(caught.value, NoCapacity)


@pytest.mark.parametrize(
    "verdicts",
    [
        (Verdict.UNFIT,),
        (Verdict.UNRESOLVABLE, Verdict.UNFIT),
        (Verdict.UNFIT, Verdict.UNRESOLVABLE),
        (),  # no replica at all
    ],
)
def test_raise_if_empty_otherwise_is_no_capacity(verdicts: tuple[Verdict, ...]) -> None:
    with pytest.raises(NoCapacity) as caught:
        _decision((), *verdicts).raise_if_empty(2.5)
    assert caught.value.retry_after_s == 2.5
    assert caught.value.code == "no_capacity"
    for i in range(len(verdicts)):
        assert f"r{i}: reason {i}" in caught.value.message
    if not verdicts:
        assert "no replica is ready" in caught.value.message


# --------------------------------------------------------------------------- build_profiles


def test_build_profiles_from_the_default_routing_config(registry: PluginRegistry) -> None:
    profiles = build_profiles(registry, RoutingConfig())

    assert set(profiles) == set(TrafficClass)
    shape = {
        c: (
            [f.TYPE for f in p.filters],
            [(w.scorer.TYPE, w.weight) for w in p.scorers],
            p.picker.TYPE,
        )
        for c, p in profiles.items()
    }
    safe = ["ready-filter", "context-fit-filter", "kv-headroom-filter"]
    assert shape == {
        TrafficClass.INTERACTIVE: (
            [*safe, "slo-ttft-filter"],
            [("predicted-ttft-scorer", 1.0)],
            "max-score-picker",
        ),
        TrafficClass.STANDARD: (
            [*safe, "slo-ttft-filter"],
            [("predicted-ttft-scorer", 2.0), ("cost-per-token-scorer", 1.0)],
            "max-score-picker",
        ),
        TrafficClass.BATCH: (
            [*safe, "queue-headroom-filter", "yield-to-interactive-filter"],
            [("cost-per-token-scorer", 3.0), ("queue-depth-scorer", 1.0)],
            "max-score-picker",
        ),
    }
    for traffic_class, profile in profiles.items():
        assert profile.name == traffic_class.value
    # One instance per plugin name, shared by every profile that refers to it.
    assert profiles[TrafficClass.INTERACTIVE].picker is profiles[TrafficClass.BATCH].picker
    assert (
        profiles[TrafficClass.INTERACTIVE].filters[0] is profiles[TrafficClass.BATCH].filters[0]
    )


def _routing(plugins: list[PluginSpec], interactive: ProfileSpec) -> RoutingConfig:
    other = ProfileSpec(picker="best")
    return RoutingConfig(
        plugins=[PluginSpec(name="best", type="max-score-picker"), *plugins],
        profiles={
            TrafficClass.INTERACTIVE: interactive,
            TrafficClass.STANDARD: other,
            TrafficClass.BATCH: other,
        },
    )


@pytest.mark.parametrize(
    ("plugins", "interactive", "match"),
    [
        # a scorer used as a filter (first use decides the instance)
        ([PluginSpec(name="ttft", type="predicted-ttft-scorer")],
         ProfileSpec(filters=["ttft"], picker="best"), "Filter"),
        # a scorer used correctly first, then as a filter
        ([PluginSpec(name="ttft", type="predicted-ttft-scorer")],
         ProfileSpec(filters=["ttft"], scorers=[WeightedRef(ref="ttft")], picker="best"),
         "ttft"),
        # a picker used as a scorer
        ([], ProfileSpec(scorers=[WeightedRef(ref="best")], picker="best"), "Scorer"),
        # a filter used as the picker
        ([PluginSpec(name="ready", type="ready-filter")],
         ProfileSpec(filters=["ready"], picker="ready"), "Picker"),
        # unknown type
        ([PluginSpec(name="ready", type="reddy-filter")],
         ProfileSpec(filters=["ready"], picker="best"), "reddy-filter"),
        # bad params, named
        ([PluginSpec(name="kv", type="kv-headroom-filter", params={"max_kv_usage": 2})],
         ProfileSpec(filters=["kv"], picker="best"), "max_kv_usage"),
        ([PluginSpec(name="kv", type="kv-headroom-filter", params={"max_kv": 0.5})],
         ProfileSpec(filters=["kv"], picker="best"), "max_kv"),
    ],
)
def test_build_profiles_bad_references_are_config_errors(
    registry: PluginRegistry, plugins: list[PluginSpec], interactive: ProfileSpec, match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        build_profiles(registry, _routing(plugins, interactive))


def test_a_profile_naming_an_undefined_plugin_fails_at_config_load() -> None:
    with pytest.raises(ValidationError, match="unknown plugins"):
        _routing([], ProfileSpec(filters=["nope"], picker="best"))


# ----------------------------------------------------------- default profiles, end to end


@pytest.fixture
def mixed(
    demo: GearshiftConfig, make_demo_endpoint: Callable[..., EndpointView]
) -> list[EndpointView]:
    """qwen2.5-0.5b on the demo's H100 (fast, $2.69/h), A100 (owned, $1.10/h) and L4 (spot,
    $0.29/h) nodes, idle, with perf profiles from the performance model."""
    return [
        make_demo_endpoint(demo, "qwen2.5-0.5b", "h100", "qwen.h100"),
        make_demo_endpoint(demo, "qwen2.5-0.5b", "a100", "qwen.a100"),
        make_demo_endpoint(demo, "qwen2.5-0.5b", "l4", "qwen.l4"),
    ]


def _route(
    registry: PluginRegistry, traffic_class: TrafficClass, endpoints: list[EndpointView],
    cycle: Cycle, prompt_tokens: int = 500, max_tokens: int = 200,
) -> RoutingDecision:
    profile = build_profiles(registry, RoutingConfig())[traffic_class]
    request = RouteRequest("qwen2.5-0.5b", traffic_class, prompt_tokens, max_tokens)
    return profile.run(request, endpoints, cycle)


def test_interactive_goes_to_the_lowest_predicted_ttft(
    registry: PluginRegistry, mixed: list[EndpointView], cycle: Cycle
) -> None:
    fastest = min(mixed, key=lambda e: e.predicted_ttft_s(500))
    cheapest = min(mixed, key=lambda e: e.cost_per_token(8))
    assert fastest is not cheapest  # the premise that makes the test mean something

    decision = _route(registry, TrafficClass.INTERACTIVE, mixed, cycle)

    assert decision.picks[0] == fastest.replica_id == "qwen.h100"
    assert len(decision.picks) == 3  # best + the default two fallbacks


def test_batch_goes_to_the_lowest_cost_per_token(
    registry: PluginRegistry, mixed: list[EndpointView], cycle: Cycle
) -> None:
    cheapest = min(mixed, key=lambda e: e.cost_per_token(8))

    decision = _route(registry, TrafficClass.BATCH, mixed, cycle)

    assert decision.picks[0] == cheapest.replica_id == "qwen.l4"
    assert decision.picks[-1] == max(mixed, key=lambda e: e.cost_per_token(8)).replica_id


def test_interactive_moves_off_a_queued_fast_replica(
    registry: PluginRegistry, demo: GearshiftConfig,
    make_demo_endpoint: Callable[..., EndpointView], cycle: Cycle,
) -> None:
    h100 = make_demo_endpoint(demo, "qwen2.5-0.5b", "h100", "qwen.h100", running=256, waiting=40)
    l4 = make_demo_endpoint(demo, "qwen2.5-0.5b", "l4", "qwen.l4")
    assert l4.predicted_ttft_s(500) < h100.predicted_ttft_s(500)
    assert _route(registry, TrafficClass.INTERACTIVE, [h100, l4], cycle).picks[0] == "qwen.l4"


def test_batch_skips_the_cheap_replica_whose_queue_is_full(
    registry: PluginRegistry, demo: GearshiftConfig,
    make_demo_endpoint: Callable[..., EndpointView], cycle: Cycle,
) -> None:
    h100 = make_demo_endpoint(demo, "qwen2.5-0.5b", "h100", "qwen.h100")
    l4 = make_demo_endpoint(demo, "qwen2.5-0.5b", "l4", "qwen.l4", running=256, waiting=8)

    decision = _route(registry, TrafficClass.BATCH, [h100, l4], cycle)

    assert decision.picks == ("qwen.h100",)
    assert [(r.subject, r.verdict, r.plugin) for r in decision.rejections] == [
        ("qwen.l4", Verdict.UNFIT, "queue-headroom")
    ]


def test_default_profile_turns_too_long_into_invalid_request_and_not_ready_into_no_capacity(
    registry: PluginRegistry, mixed: list[EndpointView], cycle: Cycle
) -> None:
    too_long = _route(registry, TrafficClass.STANDARD, mixed, cycle, prompt_tokens=4000)
    assert too_long.picks == ()
    with pytest.raises(InvalidRequest, match="maximum context length is 4096") as caught:
        too_long.raise_if_empty(1.0)
    assert caught.value.code == "context_length_exceeded"

    starting = [dataclasses.replace(e, state=ReplicaState.STARTING) for e in mixed]
    not_ready = _route(registry, TrafficClass.STANDARD, starting, cycle)
    with pytest.raises(NoCapacity) as no_capacity:
        not_ready.raise_if_empty(3.0)
    assert no_capacity.value.retry_after_s == 3.0
    assert {r.plugin for r in not_ready.rejections} == {"ready"}
