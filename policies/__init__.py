"""Built-in Gearshift policies: pure routing and placement plugins.

``register`` is the ``gearshift.policies`` entry point; it adds every built-in plugin type to a
registry. Nothing here imports Ray, HTTP libraries or engines (import-linter checks).
"""

from __future__ import annotations

from policies.placement import PLUGINS as PLACEMENT_PLUGINS
from policies.routing import PLUGINS as ROUTING_PLUGINS
from scheduler.framework.plugin import PluginSink


def register(registry: PluginSink) -> None:
    """Add every built-in plugin type to ``registry``."""
    for plugin_type in (*ROUTING_PLUGINS, *PLACEMENT_PLUGINS):
        registry.register(plugin_type)
