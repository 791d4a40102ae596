"""``gearshift capacity``: the capacity table the planner sizes the fleet with.

One row per model × node group × fitting TP × traffic class, at the request-size bucket of the
config's workload for that model and class (512/128 where it has none): the most requests per
second one replica serves within the class's targets, and why it is 0 where it is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from scheduler.cli.output import OUTPUT_OPTION_HELP, OutputFormat, emit, fail, make_table
from scheduler.config import demo_config, load_config
from scheduler.errors import ConfigError
from scheduler.placement.capacity import TAIL_PROBABILITY, CapacityRow, capacity_rows


def capacity(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="Config file; the demo fleet if omitted.")
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Only this model (default: every one).")
    ] = None,
    output: Annotated[
        OutputFormat, typer.Option("--output", "-o", help=OUTPUT_OPTION_HELP)
    ] = OutputFormat.TABLE,
) -> None:
    """Print how many requests per second one replica sustains within each class's targets.

    Rows cover every model, node group, fitting tensor-parallel degree and traffic class, at the
    request size of the config's workload (512 prompt / 128 output tokens where it has none).

    Example: gearshift capacity --model llama-3.1-8b -o json
    """
    try:
        cfg = load_config(config) if config else demo_config()
        if model is not None and cfg.model(model) is None:
            raise ConfigError(f"model `{model}` is not in the config")
        rows = capacity_rows(cfg, model)
    except ConfigError as exc:
        fail(str(exc), code=2)
    document = [capacity_row(row) for row in rows]
    emit(document, output, lambda: _table(document))


def capacity_row(row: CapacityRow) -> dict[str, Any]:
    """One row of the table as a JSON-ready object (times in ms; reason None when the rate is
    above 0)."""
    point = row.point
    return {
        "model": row.model,
        "node_group": row.group,
        "accelerator": row.accelerator,
        "tensor_parallel": row.tensor_parallel,
        "class": row.traffic_class.value,
        "prompt_tokens": row.bucket.prompt_tokens,
        "output_tokens": row.bucket.output_tokens,
        "batch": point.batch,
        "max_rate_per_s": point.rate_per_s,
        "output_tokens_per_s": row.output_tokens_per_s,
        "ttft_ms": point.ttft_s * 1e3,
        "tpot_ms": point.tpot_s * 1e3,
        "reason": point.reason or None,
    }


def _table(rows: list[dict[str, Any]]) -> Table:
    reasons: list[str] = []

    def why(reason: str | None) -> str:
        if reason is None:
            return ""
        if reason not in reasons:
            reasons.append(reason)
        return f"({reasons.index(reason) + 1})"

    table = make_table(
        "Capacity of one replica within each class's targets",
        ["model", "group", "accelerator", "TP", "class", "bucket", "batch", "req/s", "tok/s",
         "TTFT ms", "TPOT ms", "why 0"],
        [
            (row["model"], row["node_group"], row["accelerator"], row["tensor_parallel"],
             row["class"], f"{row['prompt_tokens']}/{row['output_tokens']}", row["batch"],
             f"{row['max_rate_per_s']:,.2f}", f"{row['output_tokens_per_s']:,.0f}",
             f"{row['ttft_ms']:,.0f}", f"{row['tpot_ms']:,.1f}", why(row["reason"]))
            for row in rows
        ],
    )  # fmt: skip
    for column in table.columns[5:11]:
        column.justify = "right"
    lines = [
        "bucket: prompt/output tokens, rounded up; tok/s: output tokens. Latency classes leave "
        f"headroom for random arrivals (tail probability {TAIL_PROBABILITY:.1%}); TTFT and "
        "TPOT are the predicted tails at that rate.",
        *(f"({index}) {reason}" for index, reason in enumerate(reasons, 1)),
    ]
    table.caption = "\n".join(lines)
    table.caption_justify = "left"
    return table
