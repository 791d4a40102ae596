"""``context-fit-filter``: drop replicas whose context window cannot hold prompt + output."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from scheduler.framework.plugin import PluginParams, PluginType, Rejection, Verdict
from scheduler.framework.routing import Cycle, EndpointView, Filter, FilterResult, RouteRequest


class ContextFitParams(PluginParams):
    """No parameters."""


@dataclass(frozen=True, slots=True)
class ContextFitFilter:
    TYPE: ClassVar[str] = "context-fit-filter"
    name: str
    params: ContextFitParams

    def filter(
        self, request: RouteRequest, candidates: Sequence[EndpointView], cycle: Cycle
    ) -> FilterResult:
        needed = request.prompt_tokens + request.max_tokens
        kept: list[EndpointView] = []
        rejected: list[Rejection] = []
        for endpoint in candidates:
            limit = min(endpoint.perf.max_context, endpoint.perf.kv_capacity_tokens)
            if needed <= limit:
                kept.append(endpoint)
            else:
                rejected.append(
                    Rejection(
                        endpoint.replica_id,
                        Verdict.UNRESOLVABLE,
                        f"This model's maximum context length is {limit} tokens. However, you "
                        f"requested {needed} tokens ({request.prompt_tokens} in the messages, "
                        f"{request.max_tokens} in the completion).",
                        code="context_length_exceeded",
                    )
                )
        return FilterResult(tuple(kept), tuple(rejected))


PLUGIN = PluginType(
    type_name=ContextFitFilter.TYPE,
    kind=Filter,
    params=ContextFitParams,
    factory=ContextFitFilter,
    summary="Rejects (for good) replicas whose context or KV cache cannot hold the request.",
)
