"""The plugin registry: an object (never a global) mapping type names to factories.

Built-in policies arrive through the ``gearshift.policies`` entry point, whose target is a
``register(registry)`` function. ``build`` validates a spec's params with the plugin's own
params model, so a typo in a config file fails at start-up with the field named.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from importlib.metadata import entry_points
from typing import TypeVar

from pydantic import ValidationError

from scheduler.config import PluginSpec
from scheduler.errors import ConfigError
from scheduler.framework.plugin import PluginType

ENTRY_POINT_GROUP = "gearshift.policies"

T = TypeVar("T")


class PluginRegistry:
    """Type name → ``PluginType``. Build a fresh one per process or test."""

    def __init__(self) -> None:
        self._types: dict[str, PluginType] = {}

    def register(self, plugin_type: PluginType) -> None:
        if plugin_type.type_name in self._types:
            raise ConfigError(f"plugin type `{plugin_type.type_name}` is registered twice")
        self._types[plugin_type.type_name] = plugin_type

    def types(self, kind: type | None = None) -> list[PluginType]:
        found = sorted(self._types.values(), key=lambda t: t.type_name)
        return [t for t in found if kind is None or t.kind is kind]

    def get(self, type_name: str) -> PluginType:
        try:
            return self._types[type_name]
        except KeyError:
            known = ", ".join(sorted(self._types)) or "none"
            raise ConfigError(f"unknown plugin type `{type_name}`; registered: {known}") from None

    def build(self, spec: PluginSpec, kind: type[T]) -> T:
        """An instance of ``spec``, checked to be of ``kind``; params errors name the field."""
        plugin_type = self.get(spec.type)
        if plugin_type.kind is not kind:
            raise ConfigError(
                f"plugin `{spec.name}` is a {plugin_type.kind.__name__} "
                f"({spec.type}), but a {kind.__name__} is needed here"
            )
        try:
            params = plugin_type.params.model_validate(spec.params)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}"
                for error in exc.errors(include_url=False)
            )
            raise ConfigError(f"plugin `{spec.name}` ({spec.type}) params: {problems}") from None
        instance: T = plugin_type.factory(spec.name, params)  # type: ignore[assignment]
        return instance

    @classmethod
    def from_entry_points(cls, group: str = ENTRY_POINT_GROUP) -> PluginRegistry:
        """A registry holding every plugin installed under the entry-point ``group``."""
        registry = cls()
        for entry_point in sorted(entry_points(group=group), key=lambda e: e.name):
            register: Callable[[PluginRegistry], None] = entry_point.load()
            register(registry)
        return registry

    @classmethod
    def of(cls, registrars: Iterable[Callable[[PluginRegistry], None]]) -> PluginRegistry:
        """A registry built from explicit ``register`` functions (tests, embedding)."""
        registry = cls()
        for register in registrars:
            register(registry)
        return registry
