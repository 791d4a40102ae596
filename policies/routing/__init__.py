"""Built-in routing plugins: filters, scorers and pickers (see README.md for the table)."""

from policies.routing import (
    context_fit_filter,
    cost_per_token_scorer,
    kv_headroom_filter,
    max_score_picker,
    predicted_ttft_scorer,
    queue_depth_scorer,
    queue_headroom_filter,
    ready_filter,
    round_robin_picker,
    slo_ttft_filter,
    yield_to_interactive_filter,
)
from scheduler.framework.plugin import PluginType

PLUGINS: tuple[PluginType, ...] = (
    ready_filter.PLUGIN,
    context_fit_filter.PLUGIN,
    kv_headroom_filter.PLUGIN,
    queue_headroom_filter.PLUGIN,
    slo_ttft_filter.PLUGIN,
    yield_to_interactive_filter.PLUGIN,
    predicted_ttft_scorer.PLUGIN,
    cost_per_token_scorer.PLUGIN,
    queue_depth_scorer.PLUGIN,
    max_score_picker.PLUGIN,
    round_robin_picker.PLUGIN,
)
