"""Built-in placement solvers."""

from policies.placement import cost_greedy, cost_milp, memory_best_fit
from scheduler.framework.plugin import PluginType

PLUGINS: tuple[PluginType, ...] = (memory_best_fit.PLUGIN, cost_milp.PLUGIN, cost_greedy.PLUGIN)
