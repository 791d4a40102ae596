"""Contract tests over every plugin type the ``gearshift.policies`` entry point registers.

The parameter lists are read from ``PluginRegistry.from_entry_points()`` at collection time, so a
newly registered plugin is covered without touching this file. Inputs are random but seeded:
each test draws many candidate sets / placement problems from ``random.Random(seed)``.
"""

from __future__ import annotations

import dataclasses
import random
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest
from pydantic import BaseModel

import policies
from scheduler.config import PluginSpec
from scheduler.errors import ConfigError
from scheduler.framework.placement import (
    ModelDemand,
    NodeView,
    PlacementPlan,
    PlacementProblem,
    PlacementSolver,
    ReplicaAssignment,
    ReplicaShape,
)
from scheduler.framework.plugin import PluginType, Rejection, Verdict
from scheduler.framework.routing import (
    Cycle,
    EndpointView,
    EngineLoad,
    Filter,
    FilterResult,
    PerfProfile,
    Picker,
    RouteRequest,
    Scored,
    Scorer,
)
from scheduler.plugins import PluginRegistry
from scheduler.types import Ownership, ReplicaState, TrafficClass

REGISTRY = PluginRegistry.from_entry_points()
KINDS: dict[type, str] = {
    Filter: "filter",
    Scorer: "scorer",
    Picker: "picker",
    PlacementSolver: "solver",
}
SEEDS = range(40)
NOW = 1_700_000_000.0


def _types(kind: type | None = None) -> list[Any]:
    return [pytest.param(t, id=t.type_name) for t in REGISTRY.types(kind)]


def _build(plugin_type: PluginType, name: str = "under-test") -> Any:
    return REGISTRY.build(
        PluginSpec(name=name, type=plugin_type.type_name), plugin_type.kind
    )


def _cycle(seed: int) -> Cycle:
    return Cycle(now=NOW, rng=random.Random(seed))


# ---------------------------------------------------------------------- random inputs (seeded)


def _random_endpoint(rng: random.Random, index: int) -> EndpointView:
    max_num_seqs = rng.choice([1, 4, 8, 64, 256])
    return EndpointView(
        replica_id=f"r{index}",
        model="m",
        accelerator=rng.choice(["H100-SXM", "A100-80GB", "L4", "CPU"]),
        node_id=f"n{index}",
        url=f"http://127.0.0.1:9/{index}",
        state=rng.choice(list(ReplicaState)),
        price_per_hour=rng.choice([0.0, 0.06, 0.29, 1.1, 2.69, rng.uniform(0, 40)]),
        ownership=rng.choice(list(Ownership)),
        perf=PerfProfile(
            prefill_tokens_per_s=rng.uniform(500, 250_000),
            decode_step_base_s=rng.uniform(0.001, 0.05),
            decode_step_per_seq_s=rng.choice([0.0, rng.uniform(0, 0.002)]),
            kv_capacity_tokens=rng.choice([2048, 8192, 100_000, 6_000_000]),
            max_num_seqs=max_num_seqs,
            max_context=rng.choice([2048, 4096, 8192, 131_072]),
        ),
        load=EngineLoad(
            running=rng.randint(0, max_num_seqs),
            waiting=rng.choice([0, 0, rng.randint(1, 50)]),
            kv_usage=rng.choice([0.0, 0.5, 0.95, 1.0, rng.random()]),
            in_flight=rng.randint(0, 2 * max_num_seqs + 10),
            fresh=rng.random() < 0.8,
        ),
    )


def _random_candidates(rng: random.Random) -> list[EndpointView]:
    return [_random_endpoint(rng, index) for index in range(rng.randint(1, 12))]


def _random_request(rng: random.Random) -> RouteRequest:
    return RouteRequest(
        model="m",
        traffic_class=rng.choice(list(TrafficClass)),
        prompt_tokens=rng.choice([1, 100, 4000, rng.randint(1, 200_000)]),
        max_tokens=rng.choice([1, 256, rng.randint(1, 32_768)]),
        stream=rng.random() < 0.5,
    )


_GPUS = {"H100-SXM": 79.1, "A100-80GB": 79.2, "L4": 22.0, "A10G": 22.1, "CPU": 64.0}


def _random_problem(rng: random.Random) -> PlacementProblem:
    nodes: list[NodeView] = []
    groups: list[tuple[str, str, int]] = []
    for g in range(rng.randint(1, 4)):
        accel = rng.choice(list(_GPUS))
        per_node = 1 if accel == "CPU" else rng.choice([1, 1, 2, 4, 8])
        name = f"g{g}"
        groups.append((name, accel, per_node))
        price = rng.uniform(0.05, 3.0) * per_node
        for i in range(rng.choice([0, 1, 2, 3, 4, 6])):
            nodes.append(
                NodeView(
                    node_id=f"{name}-{i}",
                    group=name,
                    accelerator=accel,
                    accelerator_count=per_node,
                    accelerator_memory_gib=_GPUS[accel],
                    price_per_hour=price,
                    ownership=rng.choice(list(Ownership)),
                    alive=rng.random() > 0.15,
                )
            )
    demands: list[ModelDemand] = []
    for m in range(rng.randint(1, 4)):
        model = f"model-{m}"
        weights = rng.choice([rng.uniform(1, 16), rng.uniform(1, 60), rng.uniform(1, 200)])
        shapes: list[ReplicaShape] = []
        for name, accel, per_node in groups:
            if rng.random() < 0.2:
                continue  # not on the model's allowlist
            for tp in (1, 2, 4, 8):
                if tp > per_node:
                    break
                need = weights / tp + rng.uniform(0.5, 10)
                fits = need <= _GPUS[accel] * 0.9 and rng.random() > 0.1
                shapes.append(
                    ReplicaShape(
                        model=model,
                        group=name,
                        accelerator=accel,
                        tensor_parallel=tp,
                        memory_per_device_gib=need,
                        fits=fits,
                        reason="" if fits else f"weights need {need:.1f} GiB per device",
                        on_cpu=accel == "CPU",
                    )
                )
        demands.append(ModelDemand(model, rng.randint(0, 6), tuple(shapes)))
    return PlacementProblem(tuple(nodes), tuple(demands))


# ------------------------------------------------------------------------------- every plugin


def test_every_registered_plugin_is_of_a_known_kind() -> None:
    assert REGISTRY.types(), "the gearshift.policies entry point registered nothing"
    for plugin_type in REGISTRY.types():
        assert plugin_type.kind in KINDS, plugin_type.type_name


@pytest.mark.parametrize("kind", list(KINDS), ids=list(KINDS.values()))
def test_every_kind_has_a_builtin_plugin(kind: type) -> None:
    # Without this a kind whose list is empty would silently skip its whole contract.
    assert REGISTRY.types(kind)


@pytest.mark.parametrize("plugin_type", _types())
def test_type_name_is_kebab_case_and_ends_with_its_role(plugin_type: PluginType) -> None:
    assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", plugin_type.type_name)
    assert plugin_type.type_name.endswith(f"-{KINDS[plugin_type.kind]}")


@pytest.mark.parametrize("plugin_type", _types())
def test_summary_is_one_sentence(plugin_type: PluginType) -> None:
    summary = plugin_type.summary
    assert summary == summary.strip() and "\n" not in summary
    assert summary[0].isupper() and summary.endswith(".")
    assert not re.search(r"[.!?]\s", summary), f"more than one sentence: {summary!r}"


@pytest.mark.parametrize("plugin_type", _types())
def test_default_params_build(plugin_type: PluginType) -> None:
    plugin = _build(plugin_type, name="my-instance")
    assert plugin.name == "my-instance"
    assert plugin_type.type_name == type(plugin).TYPE


@pytest.mark.parametrize("plugin_type", _types())
def test_params_model_rejects_unknown_keys(plugin_type: PluginType) -> None:
    spec = PluginSpec(name="x", type=plugin_type.type_name, params={"no_such_knob": 1})
    with pytest.raises(ConfigError, match="no_such_knob"):
        REGISTRY.build(spec, plugin_type.kind)


@pytest.mark.parametrize("plugin_type", _types())
def test_params_model_is_frozen_and_every_field_described(plugin_type: PluginType) -> None:
    params: type[BaseModel] = plugin_type.params
    assert params.model_config.get("extra") == "forbid"
    assert params.model_config.get("frozen") is True
    for field_name, info in params.model_fields.items():
        assert info.description, f"{plugin_type.type_name}.{field_name} has no description"


@pytest.mark.parametrize("plugin_type", _types())
def test_building_as_the_wrong_kind_is_a_config_error(plugin_type: PluginType) -> None:
    spec = PluginSpec(name="x", type=plugin_type.type_name)
    for other in KINDS:
        if other is plugin_type.kind:
            continue
        with pytest.raises(ConfigError, match=other.__name__):
            REGISTRY.build(spec, other)


@pytest.mark.parametrize("plugin_type", _types())
def test_registering_the_same_type_twice_is_a_config_error(plugin_type: PluginType) -> None:
    registry = PluginRegistry()
    registry.register(plugin_type)
    with pytest.raises(ConfigError, match=re.escape(plugin_type.type_name)):
        registry.register(plugin_type)


def test_registering_the_builtins_twice_is_a_config_error() -> None:
    registry = PluginRegistry.of([policies.register])
    with pytest.raises(ConfigError, match="registered twice"):
        policies.register(registry)


def test_unknown_type_is_a_config_error_listing_the_registered_ones() -> None:
    with pytest.raises(ConfigError, match="ready-filter"):
        REGISTRY.build(PluginSpec(name="x", type="reddy-filter"), Filter)


# ------------------------------------------------------------------------------------ filters


def _ids(endpoints: Sequence[EndpointView]) -> list[str]:
    return [e.replica_id for e in endpoints]


@pytest.mark.parametrize("plugin_type", _types(Filter))
@pytest.mark.parametrize("seed", SEEDS)
def test_filter_partitions_its_input_with_reasons(plugin_type: PluginType, seed: int) -> None:
    rng = random.Random(seed)
    plugin: Filter = _build(plugin_type)
    request, candidates = _random_request(rng), _random_candidates(rng)
    before = list(candidates)

    result = plugin.filter(request, candidates, _cycle(seed))

    assert isinstance(result, FilterResult)
    kept = _ids(result.kept)
    rejected = [r.subject for r in result.rejected]
    assert sorted(kept + rejected) == sorted(_ids(candidates)), "kept ∪ rejected ≠ input"
    assert not set(kept) & set(rejected)
    assert all(e in candidates for e in result.kept), "kept something it was not given"
    for rejection in result.rejected:
        assert isinstance(rejection, Rejection)
        assert isinstance(rejection.verdict, Verdict)
        assert rejection.reason.strip()
    assert candidates == before, "the candidate list was mutated"


@pytest.mark.parametrize("plugin_type", _types(Filter))
@pytest.mark.parametrize("seed", SEEDS)
def test_filter_is_deterministic(plugin_type: PluginType, seed: int) -> None:
    rng = random.Random(seed)
    plugin: Filter = _build(plugin_type)
    request, candidates = _random_request(rng), _random_candidates(rng)
    first = plugin.filter(request, candidates, _cycle(seed))
    again = plugin.filter(request, tuple(candidates), _cycle(seed))
    assert first == again


# ------------------------------------------------------------------------------------ scorers


@pytest.mark.parametrize("plugin_type", _types(Scorer))
@pytest.mark.parametrize("seed", SEEDS)
def test_scorer_scores_every_candidate_in_unit_interval(plugin_type: PluginType, seed: int) -> None:
    rng = random.Random(seed)
    plugin: Scorer = _build(plugin_type)
    request, candidates = _random_request(rng), _random_candidates(rng)
    before = list(candidates)

    scores = plugin.score(request, candidates, _cycle(seed))

    assert set(scores) == set(_ids(candidates))
    for replica_id, value in scores.items():
        assert 0.0 <= value <= 1.0, (replica_id, value)
    assert candidates == before, "the candidate list was mutated"


@pytest.mark.parametrize("plugin_type", _types(Scorer))
@pytest.mark.parametrize("seed", SEEDS)
def test_scorer_is_deterministic(plugin_type: PluginType, seed: int) -> None:
    rng = random.Random(seed)
    plugin: Scorer = _build(plugin_type)
    request, candidates = _random_request(rng), _random_candidates(rng)
    first = dict(plugin.score(request, candidates, _cycle(seed)))
    again = dict(plugin.score(request, tuple(candidates), _cycle(seed)))
    assert first == again


# ------------------------------------------------------------------------------------ pickers


def _ranked(rng: random.Random, distinct: bool) -> list[Scored]:
    candidates = _random_candidates(rng)
    if distinct:
        scores = rng.sample(range(1, 1000), len(candidates))
        values = [s / 100 for s in scores]
    else:
        values = [rng.choice([0.0, 0.5, 1.0]) for _ in candidates]
    ranked = [Scored(e, v) for e, v in zip(candidates, values, strict=True)]
    return sorted(ranked, key=lambda s: (-s.score, s.endpoint.replica_id))


@pytest.mark.parametrize("plugin_type", _types(Picker))
@pytest.mark.parametrize("seed", SEEDS)
def test_picker_returns_distinct_ids_from_its_input(plugin_type: PluginType, seed: int) -> None:
    rng = random.Random(seed)
    plugin: Picker = _build(plugin_type)
    ranked = _ranked(rng, distinct=rng.random() < 0.5)
    before = list(ranked)

    picks = plugin.pick(_random_request(rng), ranked, _cycle(seed))

    assert picks, "a picker given candidates must pick one"
    assert set(picks) <= {s.endpoint.replica_id for s in ranked}
    assert len(picks) == len(set(picks)), f"duplicates in {picks}"
    assert ranked == before, "the ranked list was mutated"


@pytest.mark.parametrize("plugin_type", _types(Picker))
@pytest.mark.parametrize("seed", SEEDS)
def test_picker_puts_the_best_score_first_without_ties(plugin_type: PluginType, seed: int) -> None:
    rng = random.Random(seed)
    plugin: Picker = _build(plugin_type)
    ranked = _ranked(rng, distinct=True)
    picks = plugin.pick(_random_request(rng), ranked, _cycle(seed))
    assert picks[0] == ranked[0].endpoint.replica_id
    order = {s.endpoint.replica_id: i for i, s in enumerate(ranked)}
    assert [order[p] for p in picks] == sorted(order[p] for p in picks), "fallbacks out of order"


@pytest.mark.parametrize("plugin_type", _types(Picker))
@pytest.mark.parametrize("seed", SEEDS)
def test_picker_is_deterministic_for_a_seed(plugin_type: PluginType, seed: int) -> None:
    rng = random.Random(seed)
    plugin: Picker = _build(plugin_type)
    ranked, request = _ranked(rng, distinct=False), _random_request(rng)
    assert plugin.pick(request, ranked, _cycle(seed)) == plugin.pick(request, ranked, _cycle(seed))


# ------------------------------------------------------------------------------------ solvers


def _check_plan(problem: PlacementProblem, plan: PlacementPlan) -> None:
    """Invariants every plan must satisfy for its problem."""
    nodes = {n.node_id: n for n in problem.nodes}
    demands = {d.model: d for d in problem.demands}
    ids = [a.replica_id for a in plan.assignments]
    assert len(ids) == len(set(ids)), "replica ids repeat"

    used: Counter[str] = Counter()
    per_model: Counter[str] = Counter()
    for a in plan.assignments:
        node = nodes.get(a.node_id)
        assert node is not None and node.alive, f"{a.replica_id} on a missing or dead node"
        assert a.model in demands, f"{a.replica_id} serves a model nobody asked for"
        assert a.accelerator == node.accelerator
        fitting = [
            s
            for s in demands[a.model].shapes
            if s.fits and s.group == node.group and s.tensor_parallel == a.tensor_parallel
        ]
        assert fitting, f"{a.replica_id}: no fitting shape for {node.group} TP{a.tensor_parallel}"
        used[a.node_id] += a.tensor_parallel
        per_model[a.model] += 1
    for node_id, count in used.items():
        assert count <= nodes[node_id].accelerator_count, f"{node_id} over-committed"

    short = {m for m, d in demands.items() if per_model[m] < d.replicas}
    for model, demand in demands.items():
        assert per_model[model] <= demand.replicas, f"{model} has too many replicas"
    assert short <= {r.subject for r in plan.unplaced}, "missing replicas without a reason"
    for rejection in plan.unplaced:
        assert rejection.subject in demands
        assert isinstance(rejection.verdict, Verdict)
        assert rejection.reason.strip()


@pytest.mark.parametrize("plugin_type", _types(PlacementSolver))
@pytest.mark.parametrize("seed", SEEDS)
def test_solver_plan_is_valid_and_deterministic(plugin_type: PluginType, seed: int) -> None:
    problem = _random_problem(random.Random(seed))
    solver: PlacementSolver = _build(plugin_type)
    plan = solver.solve(problem)
    _check_plan(problem, plan)
    assert solver.solve(problem) == plan
    assert _build(plugin_type).solve(problem) == plan, "a fresh instance planned differently"


@pytest.mark.parametrize("plugin_type", _types(PlacementSolver))
@pytest.mark.parametrize("seed", SEEDS)
def test_solver_is_idempotent_on_its_own_plan(plugin_type: PluginType, seed: int) -> None:
    problem = _random_problem(random.Random(seed))
    solver: PlacementSolver = _build(plugin_type)
    plan = solver.solve(problem)
    again = solver.solve(dataclasses.replace(problem, current=plan.assignments))
    assert again == plan


@pytest.mark.parametrize("plugin_type", _types(PlacementSolver))
@pytest.mark.parametrize("seed", SEEDS)
def test_solver_keeps_current_replicas_that_are_still_valid(
    plugin_type: PluginType, seed: int
) -> None:
    rng = random.Random(seed)
    problem = _random_problem(rng)
    solver: PlacementSolver = _build(plugin_type)
    plan = solver.solve(problem)
    # New, roomy, cheap nodes join every group: a fresh solve might prefer them, but nothing
    # that runs became invalid, so every current replica must stay where it is.
    extra = tuple(
        dataclasses.replace(n, node_id=f"{n.node_id}-new", price_per_hour=0.01, alive=True)
        for n in problem.nodes
    )
    grown = PlacementProblem(problem.nodes + extra, problem.demands, plan.assignments)
    replanned = solver.solve(grown)
    _check_plan(grown, replanned)
    assert set(plan.assignments) <= set(replanned.assignments)


@pytest.mark.parametrize("plugin_type", _types(PlacementSolver))
@pytest.mark.parametrize("seed", SEEDS)
def test_solver_trims_a_current_that_over_commits_or_overshoots(
    plugin_type: PluginType, seed: int
) -> None:
    # What runs can be wrong (a lost stop, a restart race): two or three replicas of a model
    # on each node, each one individually on a fitting shape, and some on nodes now dead.
    rng = random.Random(seed)
    problem = _random_problem(rng)
    current: list[ReplicaAssignment] = []
    for demand in problem.demands:
        for shape in (s for s in demand.shapes if s.fits):
            for node in (n for n in problem.nodes if n.group == shape.group):
                for copy in range(rng.randint(0, 3)):
                    current.append(
                        ReplicaAssignment(
                            f"{demand.model}.{node.node_id}.tp{shape.tensor_parallel}.{copy}",
                            demand.model,
                            node.node_id,
                            node.accelerator,
                            shape.tensor_parallel,
                            node.price_per_accelerator_hour * shape.tensor_parallel,
                        )
                    )
    messy = dataclasses.replace(problem, current=tuple(current))
    _check_plan(messy, _build(plugin_type).solve(messy))


def _stale_current_params() -> list[Any]:
    return [pytest.param(t, id=t.type_name) for t in REGISTRY.types(PlacementSolver)]


@pytest.mark.parametrize("plugin_type", _stale_current_params())
def test_solver_drops_current_replicas_that_no_longer_fit(plugin_type: PluginType) -> None:
    # The model used to run on the A100 node; the operator narrowed it to H100 (or changed its
    # TP), so the A100 shape is gone. The running replica must not survive into the plan.
    nodes = (
        NodeView("a100-0", "a100", "A100-80GB", 1, 79.2, 1.1, Ownership.OWNED),
        NodeView("h100-0", "h100", "H100-SXM", 1, 79.1, 2.69, Ownership.ON_DEMAND),
    )
    shapes = (ReplicaShape("m", "h100", "H100-SXM", 1, 17.8, True, ""),)
    current = (ReplicaAssignment("m.a100-0.0", "m", "a100-0", "A100-80GB", 1, 1.1),)
    problem = PlacementProblem(nodes, (ModelDemand("m", 1, shapes),), current)

    plan = _build(plugin_type).solve(problem)

    _check_plan(problem, plan)
    assert [a.node_id for a in plan.assignments] == ["h100-0"]
