"""What every plugin shares: a type name, an instance name, and reasoned rejections."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel


class Verdict(enum.StrEnum):
    """Why a candidate was excluded (the Kubernetes scheduler's two codes)."""

    UNFIT = "unfit"
    """Not now: saturated, starting, draining. Try later or elsewhere."""

    UNRESOLVABLE = "unresolvable"
    """Never for this request: wrong model, context too long. Retrying cannot help."""


@dataclass(frozen=True, slots=True)
class Rejection:
    """One excluded candidate, with a sentence an operator can read in ``explain``."""

    subject: str
    verdict: Verdict
    reason: str
    plugin: str = ""
    """Instance name of the plugin that said no; the framework fills it in."""
    code: str | None = None
    """Machine-readable reason (e.g. ``context_length_exceeded``), sent to clients."""


class Plugin(Protocol):
    """A registered policy. ``TYPE`` is the kebab-case registry key; ``name`` the instance."""

    TYPE: ClassVar[str]
    name: str


class PluginParams(BaseModel):
    """Base of every plugin's params model: frozen, unknown keys rejected."""

    model_config = {"frozen": True, "extra": "forbid"}


@dataclass(frozen=True, slots=True)
class PluginType:
    """A plugin type as the registry knows it: name, role, params model and factory."""

    type_name: str
    kind: type
    """The Protocol instances satisfy (Filter, Scorer, Picker, PlacementSolver)."""
    params: type[BaseModel]
    factory: Callable[[str, Any], object]
    summary: str
    """One sentence for ``gearshift plugins`` and the policies README."""


class PluginSink(Protocol):
    """Where ``register`` functions put plugin types (``scheduler.plugins.PluginRegistry``)."""

    def register(self, plugin_type: PluginType) -> None: ...
