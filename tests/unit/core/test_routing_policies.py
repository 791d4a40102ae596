"""Table-driven tests of each built-in routing plugin: what it keeps, rejects, prefers and picks.

Expected scores are computed from ``EndpointView`` (``predicted_ttft_s``, ``cost_per_token``,
``outstanding``, ``queued``), never copied in as magic numbers.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from scheduler.framework.plugin import Verdict
from scheduler.framework.routing import Cycle, EndpointView, Filter, Picker, Scored, Scorer
from scheduler.types import ReplicaState

MakePlugin = Callable[..., Any]
MakeEndpoint = Callable[..., EndpointView]


def _run_filter(plugin: Filter, request: Any, endpoints: list[EndpointView], cycle: Cycle) -> Any:
    result = plugin.filter(request, endpoints, cycle)
    kept = [e.replica_id for e in result.kept]
    rejected = {r.subject: r for r in result.rejected}
    return kept, rejected


# ------------------------------------------------------------------------------- ready-filter


@pytest.mark.parametrize(
    ("state", "kept"),
    [
        (ReplicaState.READY, True),
        (ReplicaState.STARTING, False),
        (ReplicaState.DRAINING, False),
        (ReplicaState.FAILED, False),
    ],
)
def test_ready_filter(
    make_plugin: MakePlugin,
    make_endpoint: MakeEndpoint,
    make_request: Callable[..., Any],
    cycle: Cycle,
    state: ReplicaState,
    kept: bool,
) -> None:
    plugin = make_plugin("ready-filter", Filter)
    endpoints = [make_endpoint("probe", state=state), make_endpoint("ok")]
    kept_ids, rejected = _run_filter(plugin, make_request(), endpoints, cycle)
    if kept:
        assert kept_ids == ["probe", "ok"] and not rejected
    else:
        assert kept_ids == ["ok"]
        assert rejected["probe"].verdict is Verdict.UNFIT
        assert state.value in rejected["probe"].reason


# ------------------------------------------------------------------------- context-fit-filter


@pytest.mark.parametrize(
    ("prompt", "max_tokens", "max_context", "kv_capacity", "limit"),
    [
        (4000, 96, 4096, 100_000, None),  # exactly the window: fits
        (4000, 97, 4096, 100_000, 4096),  # one token over the window
        (100, 100, 8192, 150, 150),  # the KV cache is the tighter limit
        (50, 100, 8192, 150, None),  # exactly the KV capacity: fits
        (1, 1, 16, 16, None),
    ],
)
def test_context_fit_filter(
    make_plugin: MakePlugin,
    make_endpoint: MakeEndpoint,
    make_request: Callable[..., Any],
    cycle: Cycle,
    prompt: int,
    max_tokens: int,
    max_context: int,
    kv_capacity: int,
    limit: int | None,
) -> None:
    plugin = make_plugin("context-fit-filter", Filter)
    endpoint = make_endpoint("r", max_context=max_context, kv_capacity_tokens=kv_capacity)
    request = make_request(prompt_tokens=prompt, max_tokens=max_tokens)
    kept, rejected = _run_filter(plugin, request, [endpoint], cycle)
    if limit is None:
        assert kept == ["r"] and not rejected
        return
    assert kept == []
    rejection = rejected["r"]
    assert rejection.verdict is Verdict.UNRESOLVABLE
    assert rejection.reason == (
        f"This model's maximum context length is {limit} tokens. However, you requested "
        f"{prompt + max_tokens} tokens ({prompt} in the messages, {max_tokens} in the "
        "completion)."
    )
    assert rejection.code == "context_length_exceeded"
    assert rejection.plugin == ""  # the pipeline fills in the instance name


def test_context_fit_filter_judges_each_replica_on_its_own_window(
    make_plugin: MakePlugin,
    make_endpoint: MakeEndpoint,
    make_request: Callable[..., Any],
    cycle: Cycle,
) -> None:
    plugin = make_plugin("context-fit-filter", Filter)
    endpoints = [
        make_endpoint("small-kv", kv_capacity_tokens=2_000),
        make_endpoint("big-kv", kv_capacity_tokens=2_000_000),
    ]
    kept, rejected = _run_filter(
        plugin, make_request(prompt_tokens=3_000, max_tokens=500), endpoints, cycle
    )
    assert kept == ["big-kv"] and set(rejected) == {"small-kv"}


# ------------------------------------------------------------------------- kv-headroom-filter


@pytest.mark.parametrize(
    ("params", "kv_usage", "waiting", "kept"),
    [
        ({}, 0.0, 0, True),
        ({}, 0.99, 0, True),  # full but nothing queued: vLLM will preempt or fit it
        ({}, 0.94, 30, True),  # queued but KV has room
        ({}, 0.95, 1, False),  # at the threshold with a queue
        ({}, 1.0, 5, False),
        ({"max_kv_usage": 0.5}, 0.5, 1, False),
        ({"max_kv_usage": 0.5}, 0.49, 1, True),
    ],
)
def test_kv_headroom_filter(
    make_plugin: MakePlugin,
    make_endpoint: MakeEndpoint,
    make_request: Callable[..., Any],
    cycle: Cycle,
    params: dict[str, float],
    kv_usage: float,
    waiting: int,
    kept: bool,
) -> None:
    plugin = make_plugin("kv-headroom-filter", Filter, **params)
    endpoint = make_endpoint("r", kv_usage=kv_usage, waiting=waiting, running=8)
    kept_ids, rejected = _run_filter(plugin, make_request(), [endpoint], cycle)
    assert (kept_ids == ["r"]) is kept
    if not kept:
        assert rejected["r"].verdict is Verdict.UNFIT
        assert f"{kv_usage:.0%}" in rejected["r"].reason
        assert f"{waiting} waiting" in rejected["r"].reason


# ----------------------------------------------------------------------- queue-headroom-filter


@pytest.mark.parametrize(
    ("params", "load", "kept"),
    [
        ({}, {}, True),
        ({}, {"running": 8, "waiting": 7}, True),
        ({}, {"running": 8, "waiting": 8}, False),  # max_queued (8) reached
        # The scrape lags: the gateway's own in-flight count shows 8 beyond the 8 batch slots.
        ({}, {"in_flight": 16}, False),
        ({}, {"in_flight": 15}, True),
        ({"max_queued": 1}, {"running": 8, "waiting": 1}, False),
        ({"max_queued": 1}, {"running": 3, "waiting": 0}, True),
    ],
)
def test_queue_headroom_filter(
    make_plugin: MakePlugin,
    make_endpoint: MakeEndpoint,
    make_request: Callable[..., Any],
    cycle: Cycle,
    params: dict[str, int],
    load: dict[str, int],
    kept: bool,
) -> None:
    plugin = make_plugin("queue-headroom-filter", Filter, **params)
    endpoint = make_endpoint("r", max_num_seqs=8, **load)
    kept_ids, rejected = _run_filter(plugin, make_request(), [endpoint], cycle)
    assert (kept_ids == ["r"]) is kept
    if not kept:
        limit = params.get("max_queued", 8)
        assert rejected["r"].verdict is Verdict.UNFIT
        assert rejected["r"].reason == f"{endpoint.queued} requests queued (limit {limit})"


# ---------------------------------------------------------------------- predicted-ttft-scorer


@pytest.mark.parametrize(
    ("fast", "slow", "prompt_tokens"),
    [
        # faster prefill, both idle
        ({"prefill_tokens_per_s": 40_000}, {"prefill_tokens_per_s": 4_000}, 2000),
        # same card, one already has a queue
        ({}, {"running": 8, "waiting": 6}, 500),
        # same card, the gateway has in-flight requests the scrape has not seen yet
        ({}, {"in_flight": 20}, 500),
        # a fast card swamped loses to a slow idle one
        ({"prefill_tokens_per_s": 4_000}, {"prefill_tokens_per_s": 40_000, "waiting": 40}, 4000),
        # a busy batch (longer decode step in flight) delays the first token
        ({"running": 1}, {"running": 8}, 10),
    ],
)
def test_predicted_ttft_scorer_prefers_the_sooner_first_token(
    make_plugin: MakePlugin,
    make_endpoint: MakeEndpoint,
    make_request: Callable[..., Any],
    cycle: Cycle,
    fast: dict[str, Any],
    slow: dict[str, Any],
    prompt_tokens: int,
) -> None:
    plugin = make_plugin("predicted-ttft-scorer", Scorer)
    a = make_endpoint("fast", max_num_seqs=8, **fast)
    b = make_endpoint("slow", max_num_seqs=8, **slow)
    assert a.predicted_ttft_s(prompt_tokens) < b.predicted_ttft_s(prompt_tokens)  # table sanity

    scores = plugin.score(make_request(prompt_tokens=prompt_tokens), [a, b], cycle)

    best = a.predicted_ttft_s(prompt_tokens)
    assert scores["fast"] == pytest.approx(1.0)
    assert scores["slow"] == pytest.approx(best / b.predicted_ttft_s(prompt_tokens))
    assert scores["slow"] < scores["fast"]


# ---------------------------------------------------------------------- cost-per-token-scorer


H100_LIKE: dict[str, Any] = {
    "accelerator": "H100-SXM",
    "price_per_hour": 2.69,
    "prefill_tokens_per_s": 40_000.0,
    "decode_step_base_s": 0.007,
    "decode_step_per_seq_s": 0.0002,
}
L4_LIKE: dict[str, Any] = {
    "accelerator": "L4",
    "price_per_hour": 0.29,
    "prefill_tokens_per_s": 4_000.0,
    "decode_step_base_s": 0.03,
    "decode_step_per_seq_s": 0.001,
}


@pytest.mark.parametrize(
    ("a", "b", "params"),
    [
        (H100_LIKE, L4_LIKE, {}),
        ({**H100_LIKE, "price_per_hour": 0.10}, L4_LIKE, {}),  # an owned H100 at $0.10/h
        (L4_LIKE, {**L4_LIKE, "price_per_hour": 0.58}, {}),  # same card, twice the price
        (H100_LIKE, L4_LIKE, {"reference_batch": 1}),
        (H100_LIKE, L4_LIKE, {"reference_batch": 256}),
        ({**L4_LIKE, "price_per_hour": 0.0}, H100_LIKE, {}),  # free (already paid for) wins
    ],
)
def test_cost_per_token_scorer_scores_cheapest_over_own_cost(
    make_plugin: MakePlugin,
    make_endpoint: MakeEndpoint,
    make_request: Callable[..., Any],
    cycle: Cycle,
    a: dict[str, Any],
    b: dict[str, Any],
    params: dict[str, int],
) -> None:
    plugin = make_plugin("cost-per-token-scorer", Scorer, **params)
    batch = params.get("reference_batch", 8)
    endpoints = [
        make_endpoint("a", max_num_seqs=256, **a),
        make_endpoint("b", max_num_seqs=256, **b),
    ]

    scores = plugin.score(make_request(), endpoints, cycle)

    cost = {e.replica_id: e.cost_per_token(batch) for e in endpoints}
    cheapest = min(cost, key=cost.__getitem__)
    assert scores[cheapest] == pytest.approx(1.0)
    for rid, value in cost.items():
        expected = cost[cheapest] / value if value > 0 else 1.0
        assert scores[rid] == pytest.approx(expected)


def test_cost_per_token_scorer_prefers_the_l4_over_the_h100(
    make_plugin: MakePlugin, make_endpoint: MakeEndpoint, make_request: Callable[..., Any],
    cycle: Cycle,
) -> None:
    plugin = make_plugin("cost-per-token-scorer", Scorer)
    h100, l4 = make_endpoint("h100", **H100_LIKE), make_endpoint("l4", **L4_LIKE)
    assert l4.cost_per_token(8) < h100.cost_per_token(8)  # the premise
    scores = plugin.score(make_request(), [h100, l4], cycle)
    assert scores["l4"] == pytest.approx(1.0) and scores["h100"] < 1.0


def test_cost_per_token_scorer_compares_at_the_reference_batch_not_the_current_load(
    make_plugin: MakePlugin, make_endpoint: MakeEndpoint, make_request: Callable[..., Any],
    cycle: Cycle,
) -> None:
    # "flat" decodes one sequence slowly but batching is free; "steep" is quick alone but every
    # extra sequence costs. Which is cheaper per token depends on the batch compared at.
    flat = make_endpoint(
        "flat", decode_step_base_s=0.02, decode_step_per_seq_s=0.0, max_num_seqs=64
    )
    steep = make_endpoint(
        "steep", decode_step_base_s=0.01, decode_step_per_seq_s=0.002, max_num_seqs=64
    )
    assert steep.cost_per_token(1) < flat.cost_per_token(1)
    assert flat.cost_per_token(64) < steep.cost_per_token(64)

    at_one = make_plugin("cost-per-token-scorer", Scorer, reference_batch=1)
    at_64 = make_plugin("cost-per-token-scorer", Scorer, reference_batch=64)
    request = make_request()
    assert at_one.score(request, [flat, steep], cycle)["steep"] == pytest.approx(1.0)
    assert at_64.score(request, [flat, steep], cycle)["flat"] == pytest.approx(1.0)
    # Load does not move the comparison: the scorer uses the reference batch only.
    busy_flat = make_endpoint(
        "flat", decode_step_base_s=0.02, decode_step_per_seq_s=0.0, max_num_seqs=64, running=64
    )
    assert at_one.score(request, [busy_flat, steep], cycle) == at_one.score(
        request, [flat, steep], cycle
    )


# ------------------------------------------------------------------------- queue-depth-scorer


@pytest.mark.parametrize(
    ("lighter", "heavier"),
    [
        ({}, {"running": 1}),
        ({"running": 2}, {"running": 4}),
        ({"running": 4}, {"running": 7}),
        ({"running": 4}, {"running": 4, "waiting": 4}),  # KV-bound: waiting with free slots
        ({"running": 2}, {"in_flight": 6}),  # the gateway's own count beats a stale scrape
        ({"running": 7}, {"running": 8, "waiting": 3}),
        pytest.param({"running": 8, "waiting": 1}, {"running": 8, "waiting": 50},
                     id="saturated-short-vs-long-queue"),
        pytest.param({"in_flight": 9}, {"in_flight": 30},
                     id="saturated-in-flight"),
    ],
)
def test_queue_depth_scorer_prefers_fewer_outstanding_per_slot(
    make_plugin: MakePlugin,
    make_endpoint: MakeEndpoint,
    make_request: Callable[..., Any],
    cycle: Cycle,
    lighter: dict[str, int],
    heavier: dict[str, int],
) -> None:
    plugin = make_plugin("queue-depth-scorer", Scorer)
    endpoints = [
        make_endpoint("lighter", max_num_seqs=8, **lighter),
        make_endpoint("heavier", max_num_seqs=8, **heavier),
    ]
    scores = plugin.score(make_request(), endpoints, cycle)
    assert all(0.0 <= value <= 1.0 for value in scores.values())
    assert scores["lighter"] > scores["heavier"]


@pytest.mark.parametrize("max_num_seqs", [1, 8, 256])
def test_queue_depth_scorer_is_one_when_idle_and_near_zero_when_swamped(
    make_plugin: MakePlugin,
    make_endpoint: MakeEndpoint,
    make_request: Callable[..., Any],
    cycle: Cycle,
    max_num_seqs: int,
) -> None:
    plugin = make_plugin("queue-depth-scorer", Scorer)
    endpoints = [
        make_endpoint("idle", max_num_seqs=max_num_seqs),
        make_endpoint("swamped", max_num_seqs=max_num_seqs, in_flight=100 * max_num_seqs),
    ]
    scores = plugin.score(make_request(), endpoints, cycle)
    assert scores["idle"] == 1.0
    assert 0.0 <= scores["swamped"] < 0.02


# -------------------------------------------------------------------------- max-score-picker


def _ranked(make_endpoint: MakeEndpoint, scores: dict[str, float]) -> list[Scored]:
    ranked = [Scored(make_endpoint(rid), score) for rid, score in scores.items()]
    return sorted(ranked, key=lambda s: (-s.score, s.endpoint.replica_id))


@pytest.mark.parametrize(
    ("params", "scores", "expected"),
    [
        ({}, {"a": 0.9, "b": 0.5, "c": 0.7, "d": 0.1}, ("a", "c", "b")),  # best + 2 fallbacks
        ({"fallbacks": 0}, {"a": 0.2, "b": 0.8}, ("b",)),
        ({"fallbacks": 5}, {"a": 0.2, "b": 0.8}, ("b", "a")),  # fewer candidates than asked
        ({"fallbacks": 3}, {"a": 3.0, "b": 2.0, "c": 1.0, "d": 0.0}, ("a", "b", "c", "d")),
        ({"tie_epsilon": 0.0}, {"a": 0.5, "b": 0.5 - 1e-12}, ("a", "b")),  # no tolerance
    ],
)
def test_max_score_picker_order_and_fallbacks(
    make_plugin: MakePlugin,
    make_endpoint: MakeEndpoint,
    make_request: Callable[..., Any],
    cycle: Cycle,
    params: dict[str, Any],
    scores: dict[str, float],
    expected: tuple[str, ...],
) -> None:
    plugin = make_plugin("max-score-picker", Picker, **params)
    assert plugin.pick(make_request(), _ranked(make_endpoint, scores), cycle) == expected


@pytest.mark.parametrize(
    ("params", "scores", "tied", "after"),
    [
        ({"fallbacks": 4}, {"a": 1.0, "b": 1.0, "c": 1.0, "d": 0.5}, {"a", "b", "c"}, ["d"]),
        # within the default epsilon of 1e-9 counts as a tie
        ({"fallbacks": 2}, {"a": 0.7, "b": 0.7 - 1e-12, "c": 0.2}, {"a", "b"}, ["c"]),
        # a wider epsilon widens the tie; the group is anchored at its best score
        ({"fallbacks": 3, "tie_epsilon": 0.05}, {"a": 0.9, "b": 0.88, "c": 0.86, "d": 0.8},
         {"a", "b", "c"}, ["d"]),
    ],
)
def test_max_score_picker_shuffles_ties_with_the_cycle_rng(
    make_plugin: MakePlugin,
    make_endpoint: MakeEndpoint,
    make_request: Callable[..., Any],
    make_cycle: Callable[[int], Cycle],
    params: dict[str, Any],
    scores: dict[str, float],
    tied: set[str],
    after: list[str],
) -> None:
    plugin = make_plugin("max-score-picker", Picker, **params)
    ranked = _ranked(make_endpoint, scores)
    request = make_request()
    firsts: Counter[str] = Counter()
    for seed in range(60):
        picks = plugin.pick(request, ranked, make_cycle(seed))
        assert picks == plugin.pick(request, ranked, make_cycle(seed)), "same seed, same order"
        assert set(picks[: len(tied)]) == tied, "a tie group was split or overtaken"
        assert list(picks[len(tied) :]) == after
        firsts[picks[0]] += 1
    assert set(firsts) == tied, f"ties are not spread: {firsts}"


def test_max_score_picker_draws_from_the_cycle_rng_only(
    make_plugin: MakePlugin, make_endpoint: MakeEndpoint, make_request: Callable[..., Any]
) -> None:
    plugin = make_plugin("max-score-picker", Picker, fallbacks=3)
    ranked = _ranked(make_endpoint, {"a": 1.0, "b": 1.0, "c": 1.0, "d": 1.0})
    random.seed(1)
    first = plugin.pick(make_request(), ranked, Cycle(now=0.0, rng=random.Random(42)))
    random.seed(2)  # the global RNG must not matter
    second = plugin.pick(make_request(), ranked, Cycle(now=0.0, rng=random.Random(42)))
    assert first == second
