"""Built-in placement solvers."""

from policies.placement import memory_best_fit
from scheduler.framework.plugin import PluginType

PLUGINS: tuple[PluginType, ...] = (memory_best_fit.PLUGIN,)
