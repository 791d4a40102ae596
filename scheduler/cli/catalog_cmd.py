"""``gearshift catalog``: the accelerators and models Gearshift knows, with their planning figures.

JSON and YAML output is a list of objects; every object has ``type`` (``accelerator`` or
``model``) and the same keys as the others of its type.
"""

from __future__ import annotations

import enum
from typing import Annotated, Any

import typer
from rich.table import Table

from nodes.accelerators import ACCELERATORS, AcceleratorSpec
from nodes.models import MODELS, CatalogModel, Dtype, bytes_per_param
from nodes.performance import GIB
from scheduler.cli.output import OUTPUT_OPTION_HELP, OutputFormat, emit, make_table


class CatalogKind(enum.StrEnum):
    """Which half of the catalog to list."""

    ACCELERATORS = "accelerators"
    MODELS = "models"
    ALL = "all"


def catalog(
    kind: Annotated[
        CatalogKind, typer.Argument(help="What to list: accelerators, models or all.")
    ] = CatalogKind.ALL,
    output: Annotated[
        OutputFormat, typer.Option("--output", "-o", help=OUTPUT_OPTION_HELP)
    ] = OutputFormat.TABLE,
) -> None:
    """List the accelerators and models Gearshift knows, with the figures it plans with.

    Prices are defaults that a node group's price_per_node_hour overrides.

    calibrated: published vLLM measurements on that card agree with the performance model.

    The CPU row is a default 16-vCPU node; describe yours under a node group's cpu key.

    Example: gearshift catalog accelerators -o json
    """
    rows: list[dict[str, Any]] = []
    if kind in (CatalogKind.ACCELERATORS, CatalogKind.ALL):
        rows += [accelerator_row(spec) for spec in ACCELERATORS.values()]
    if kind in (CatalogKind.MODELS, CatalogKind.ALL):
        rows += [model_row(model) for model in MODELS.values()]
    emit(rows, output, lambda: _tables(rows))


def accelerator_row(spec: AcceleratorSpec) -> dict[str, Any]:
    """One accelerator as a JSON-ready object."""
    return {
        "type": "accelerator",
        "name": spec.name,
        "kind": spec.kind.value,
        "vendor": spec.vendor,
        "memory_gib": spec.memory_gib,
        "memory_bandwidth_gbps": spec.memory_bandwidth_gbps,
        "bf16_tflops": spec.bf16_tflops,
        "fp8_tflops": spec.fp8_tflops,
        "price_per_hour": spec.default_price_per_hour,
        "price_source": spec.price_source,
        "ray_type": spec.ray_type,
        "interconnect": spec.interconnect,
        "supports_bf16": spec.supports_bf16,
        "calibrated": spec.calibrated,
        "cores": spec.cores,
        "aliases": list(spec.aliases),
    }


def model_row(model: CatalogModel) -> dict[str, Any]:
    """One catalog model as a JSON-ready object; weight size is for bf16, KV for a 16-bit cache."""
    arch = model.architecture
    return {
        "type": "model",
        "name": model.name,
        "hf_id": model.hf_id,
        "num_parameters": arch.num_parameters,
        "params_billions": arch.num_parameters / 1e9,
        "num_layers": arch.num_layers,
        "hidden_size": arch.hidden_size,
        "num_attention_heads": arch.num_attention_heads,
        "num_kv_heads": arch.num_kv_heads,
        "head_dim": arch.head_dim,
        "max_context": arch.max_position_embeddings,
        "default_dtype": model.default_dtype.value,
        "bf16_weights_gib": arch.num_parameters * bytes_per_param(Dtype.BF16) / GIB,
        "kv_kib_per_token": arch.kv_bytes_per_token() / 1024,
    }


def _tables(rows: list[dict[str, Any]]) -> list[Table]:
    accelerators = [row for row in rows if row["type"] == "accelerator"]
    models = [row for row in rows if row["type"] == "model"]
    tables = []
    if accelerators:
        tables.append(
            make_table(
                "Accelerators",
                [
                    "name",
                    "memory GiB",
                    "bandwidth GB/s",
                    "bf16 TFLOP/s",
                    "$/h default",
                    "price source",
                    "ray type",
                    "calibrated",
                ],
                [
                    [
                        a["name"],
                        a["memory_gib"],
                        a["memory_bandwidth_gbps"],
                        a["bf16_tflops"],
                        a["price_per_hour"],
                        a["price_source"],
                        a["ray_type"],
                        "yes" if a["calibrated"] else "no",
                    ]
                    for a in accelerators
                ],
            )
        )
    if models:
        tables.append(
            make_table(
                "Models",
                [
                    "name",
                    "params B",
                    "layers",
                    "kv heads",
                    "head dim",
                    "max context",
                    "bf16 weights GiB",
                    "KV KiB/token",
                    "hf id",
                ],
                [
                    [
                        m["name"],
                        m["params_billions"],
                        m["num_layers"],
                        m["num_kv_heads"],
                        m["head_dim"],
                        m["max_context"],
                        m["bf16_weights_gib"],
                        m["kv_kib_per_token"],
                        m["hf_id"],
                    ]
                    for m in models
                ],
            )
        )
    return tables
