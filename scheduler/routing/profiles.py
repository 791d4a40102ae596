"""Build one ``RoutingProfile`` per traffic class from the routing config and a registry."""

from __future__ import annotations

from typing import Any, TypeVar

from scheduler.config import PluginSpec, RoutingConfig
from scheduler.errors import ConfigError
from scheduler.framework.routing import Filter, Picker, Scorer
from scheduler.plugins import PluginRegistry
from scheduler.routing.pipeline import RoutingProfile, WeightedScorer
from scheduler.types import TrafficClass

T = TypeVar("T")


def build_profiles(
    registry: PluginRegistry, routing: RoutingConfig
) -> dict[TrafficClass, RoutingProfile]:
    """Instantiate every plugin once and wire the profiles; ``ConfigError`` on a bad reference."""
    specs: dict[str, PluginSpec] = {spec.name: spec for spec in routing.plugins}
    built: dict[str, Any] = {}

    def instance(name: str, kind: type[T]) -> T:
        # One instance per plugin name; ``registry.build`` checks the kind the profile needs.
        if name not in built:
            built[name] = registry.build(specs[name], kind)
        elif registry.get(specs[name].type).kind is not kind:
            raise ConfigError(f"plugin `{name}` cannot serve as a {kind.__name__}")
        plugin: T = built[name]
        return plugin

    return {
        traffic_class: RoutingProfile(
            name=traffic_class.value,
            filters=tuple(instance(name, Filter) for name in spec.filters),
            scorers=tuple(
                WeightedScorer(instance(ref.ref, Scorer), ref.weight) for ref in spec.scorers
            ),
            picker=instance(spec.picker, Picker),
        )
        for traffic_class, spec in routing.profiles.items()
    }
