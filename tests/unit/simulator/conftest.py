"""Shared builders for the simulator tests: a small fleet, its plan, and the gateway's profiles."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from scheduler.config import GearshiftConfig, parse_config
from scheduler.framework.placement import NodeView, PlacementPlan, PlacementSolver
from scheduler.inventory import declared_node_views
from scheduler.placement.planner import plan
from scheduler.plugins import PluginRegistry

SMALL_FLEET = """
fleet:
  node_groups:
    - {name: h100, accelerator: H100-SXM, nodes: 1}
    - {name: l4, accelerator: L4, nodes: 2, price_per_node_hour: 0.3}
models:
  - {name: qwen2.5-0.5b, max_context: 4096, replicas: 3, max_num_seqs: %(seqs)d}
"""

MODEL = "qwen2.5-0.5b"


def _nodes(config: GearshiftConfig) -> list[NodeView]:
    return declared_node_views(config)


def _fleet(max_num_seqs: int = 64, replicas: int = 3) -> tuple[GearshiftConfig, PlacementPlan]:
    text = (SMALL_FLEET % {"seqs": max_num_seqs}).replace("replicas: 3", f"replicas: {replicas}")
    config = parse_config(text)
    solver = PluginRegistry.from_entry_points().build(config.placement.solver, PlacementSolver)
    placed = plan(solver, config, _nodes(config), [])
    assert len(placed.assignments) == replicas
    return config, placed


@pytest.fixture
def fleet() -> Callable[..., tuple[GearshiftConfig, PlacementPlan]]:
    """``fleet(max_num_seqs=64, replicas=3)``: the config and the solver's plan for it."""
    return _fleet


def offline_plan(config: GearshiftConfig) -> PlacementPlan:
    """The config's own solver over every node of its fleet, all up (as ``gearshift simulate``)."""
    solver = PluginRegistry.from_entry_points().build(config.placement.solver, PlacementSolver)
    return plan(solver, config, _nodes(config), [])


@pytest.fixture
def planner() -> Callable[[GearshiftConfig], PlacementPlan]:
    """Plans a config on its whole fleet with its own solver."""
    return offline_plan
