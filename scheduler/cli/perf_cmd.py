"""``gearshift perf``: what the performance model predicts for one model on one accelerator type.

A layout that does not fit still prints its figures, marked ``fits: no`` with the reason, and
exits 0: "it does not fit" answers the question. Unknown names and impossible layouts exit 2.
``--calibration`` prints the model's predictions next to published measurements instead.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from nodes.accelerators import AcceleratorSpec, accelerator
from nodes.calibration import CalibrationRow, calibration_table
from nodes.models import Dtype, architecture_from_hf_config, catalog_model
from nodes.performance import ReplicaPerformance, replica_performance
from scheduler.cli.output import OUTPUT_OPTION_HELP, OutputFormat, emit, fail, make_table
from scheduler.errors import CatalogError, ConfigError

_UNCAPPED = sys.maxsize
_TP_CANDIDATES = (1, 2, 4, 8)


def perf(
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="Catalog model name or Hugging Face id."),
    ] = None,
    accelerator_name: Annotated[
        str | None,
        typer.Option("--accelerator", "-a", help="Accelerator catalog name: H100-SXM, L4, CPU..."),
    ] = None,
    tp: Annotated[int, typer.Option("--tp", min=1, help="Tensor-parallel degree.")] = 1,
    batch: Annotated[
        int, typer.Option("--batch", "-b", min=1, help="Sequences decoding together.")
    ] = 1,
    context: Annotated[
        int,
        typer.Option("--context", "-c", min=1, help="Context tokens of each decoding sequence."),
    ] = 1024,
    prompt: Annotated[
        int, typer.Option("--prompt", "-p", min=1, help="Prompt tokens for the prefill figure.")
    ] = 1024,
    dtype: Annotated[
        Dtype | None,
        typer.Option(
            "--dtype", help="Weight dtype; defaults to the model's (float16 on cards without bf16)."
        ),
    ] = None,
    gpu_memory_utilization: Annotated[
        float,
        typer.Option(
            "--gpu-memory-utilization",
            min=0.05,
            max=1.0,
            help="Fraction of each device's memory the engine may use.",
        ),
    ] = 0.9,
    hf_config: Annotated[
        Path | None,
        typer.Option(
            "--hf-config",
            help="Hugging Face config.json (or its folder) to read the "
            "architecture from, instead of --model.",
        ),
    ] = None,
    calibration: Annotated[
        bool,
        typer.Option(
            "--calibration",
            help="Print published measurements against the model's "
            "predictions instead; other options are ignored.",
        ),
    ] = False,
    output: Annotated[
        OutputFormat, typer.Option("--output", "-o", help=OUTPUT_OPTION_HELP)
    ] = OutputFormat.TABLE,
) -> None:
    """Predict one replica's speed, KV-cache capacity and memory fit from the performance model.

    Prefill time is for one prompt of --prompt tokens.

    Decode-step time and tokens/s are for --batch sequences of --context tokens each.

    A layout that does not fit still prints, marked "fits: no" with the reason, and exits 0.

    Unknown names, or a --tp that does not divide the attention heads, exit 2.

    Example: gearshift perf -m llama-3.1-8b -a L4 --batch 16 --context 2048
    """
    if calibration:
        calibration_rows = [calibration_row(row) for row in calibration_table()]
        emit(calibration_rows, output, lambda: _calibration_table(calibration_rows))
        return
    if accelerator_name is None:
        fail("give --accelerator (see `gearshift catalog accelerators`)", code=2)
    if (model is None) == (hf_config is None):
        fail("give one of --model (see `gearshift catalog models`) or --hf-config", code=2)
    try:
        spec = accelerator(accelerator_name)
        if model is not None:
            entry = catalog_model(model)
            label, hf_id, architecture = entry.name, entry.hf_id, entry.architecture
            default_dtype = entry.default_dtype
        else:
            assert hf_config is not None
            label, hf_id, default_dtype = str(hf_config), None, Dtype.BF16
            architecture = architecture_from_hf_config(hf_config)
    except (CatalogError, ConfigError) as exc:
        fail(str(exc), code=2)
    chosen, notes = _choose_dtype(dtype, default_dtype, spec)
    try:
        replica = replica_performance(architecture, chosen, spec, tp, gpu_memory_utilization)
    except ValueError as exc:
        fail(f"{label} on {spec.name}: {exc}", code=2)
    report = perf_report(
        replica, label=label, hf_id=hf_id, batch=batch, context=context, prompt=prompt
    )
    report["notes"] = notes + report["notes"]
    emit(report, output, lambda: _perf_table(report))


def _choose_dtype(
    requested: Dtype | None, default: Dtype, spec: AcceleratorSpec
) -> tuple[Dtype, list[str]]:
    """The dtype to model (float16 for the default bf16 on cards without it) and notes on it."""
    chosen = requested if requested is not None else default
    notes = []
    if chosen is Dtype.BF16 and not spec.supports_bf16:
        if requested is None:
            chosen = Dtype.FP16
            notes.append(f"{spec.name} has no bf16 support: using float16.")
        else:
            notes.append(f"{spec.name} has no bf16 support; vLLM would refuse bfloat16 here.")
    if chosen is Dtype.FP8 and spec.fp8_tflops is None:
        notes.append(f"{spec.name} has no FP8 tensor cores: prefill uses its bf16 FLOP/s.")
    return chosen, notes


def perf_report(
    replica: ReplicaPerformance,
    *,
    label: str,
    hf_id: str | None,
    batch: int,
    context: int,
    prompt: int,
) -> dict[str, Any]:
    """The predicted figures of ``replica`` as a JSON-ready object (times in ms, sizes in GiB)."""
    spec = replica.accelerator
    step_s = replica.decode_step_seconds(batch, context)
    sequences = replica.max_batch(context, max_num_seqs=_UNCAPPED)
    notes = []
    max_context = replica.architecture.max_position_embeddings
    for what, tokens in (("--context", context), ("--prompt", prompt)):
        if tokens > max_context:
            notes.append(f"{what} {tokens} exceeds the model's {max_context}-token context.")
    if replica.fits and batch > sequences:
        notes.append(
            f"the KV cache holds {sequences} sequences of {context} tokens, fewer than "
            f"--batch {batch}: vLLM would queue or preempt the rest."
        )
    if not spec.calibrated:
        notes.append(f"{spec.name} is roofline-only: no published measurement checks it.")
    return {
        "model": label,
        "hf_id": hf_id,
        "accelerator": spec.name,
        "dtype": replica.dtype.value,
        "tensor_parallel": replica.tensor_parallel,
        "gpu_memory_utilization": replica.gpu_memory_utilization,
        "batch": batch,
        "context_tokens": context,
        "prompt_tokens": prompt,
        "fits": replica.fits,
        "reason": None if replica.fits else _misfit_reason(replica),
        "prefill_ms": replica.prefill_seconds(prompt) * 1e3,
        "decode_step_ms": step_s * 1e3,
        "tokens_per_s_per_sequence": 1.0 / step_s,
        "tokens_per_s_total": replica.decode_tokens_per_second(batch, context),
        "kv_capacity_tokens": replica.kv_capacity_tokens,
        "kv_capacity_sequences": sequences,
        "weights_gib_per_device": replica.weights_gib_per_device,
        "reserve_gib_per_device": replica.reserve_gib_per_device,
        "usable_gib_per_device": spec.memory_gib * replica.gpu_memory_utilization,
        "calibrated": spec.calibrated,
        "notes": notes,
    }


def _misfit_reason(replica: ReplicaPerformance) -> str:
    spec = replica.accelerator
    usable = spec.memory_gib * replica.gpu_memory_utilization
    needed = replica.weights_gib_per_device + replica.reserve_gib_per_device
    if needed >= usable:
        reason = (
            f"weights ({replica.weights_gib_per_device:.1f} GiB) plus runtime reserve "
            f"({replica.reserve_gib_per_device:.1f} GiB) per device exceed the usable "
            f"{usable:.1f} GiB ({spec.memory_gib:g} GiB x {replica.gpu_memory_utilization:g})"
        )
    else:
        reason = f"no memory is left for the KV cache after {needed:.1f} GiB of weights and reserve"
    larger = _smallest_fitting_tp(replica)
    return f"{reason}; try --tp {larger}" if larger is not None else reason


def _smallest_fitting_tp(replica: ReplicaPerformance) -> int | None:
    """The smallest larger tensor-parallel degree (up to 8) at which the replica fits."""
    heads = replica.architecture.num_attention_heads
    for degree in _TP_CANDIDATES:
        if degree <= replica.tensor_parallel or heads % degree:
            continue
        candidate = replica_performance(
            replica.architecture,
            replica.dtype,
            replica.accelerator,
            degree,
            replica.gpu_memory_utilization,
        )
        if candidate.fits:
            return degree
    return None


def calibration_row(row: CalibrationRow) -> dict[str, Any]:
    """One calibration point with its prediction, as a JSON-ready object."""
    point = row.point
    return {
        "model": point.model,
        "accelerator": point.accelerator,
        "cpu_cores": point.cpu_cores,
        "engine": point.engine,
        "dtype": point.dtype.value,
        "tensor_parallel": point.tensor_parallel,
        "batch_size": point.batch_size,
        "context_tokens": point.context_tokens,
        "prompt_tokens": point.prompt_tokens,
        "output_tokens": point.output_tokens,
        "metric": point.metric,
        "published": point.published,
        "predicted": row.predicted,
        "ratio": row.ratio,
        "tolerance": point.tolerance,
        "within_tolerance": row.within_tolerance,
        "outlier": point.outlier,
        "reason": point.reason or None,
        "source": point.source,
    }


def _perf_table(report: dict[str, Any]) -> Table:
    fits = "yes" if report["fits"] else f"no: {report['reason']}"
    rows: list[list[Any]] = [
        ["fits", fits],
        [f"prefill of {report['prompt_tokens']} tokens (ms)", report["prefill_ms"]],
        [
            f"decode step, batch {report['batch']} x {report['context_tokens']} ctx (ms)",
            report["decode_step_ms"],
        ],
        ["tokens/s per sequence", report["tokens_per_s_per_sequence"]],
        ["tokens/s total", report["tokens_per_s_total"]],
        ["KV capacity (tokens)", report["kv_capacity_tokens"]],
        [f"KV capacity (sequences of {report['context_tokens']})", report["kv_capacity_sequences"]],
        ["weights per device (GiB)", report["weights_gib_per_device"]],
        ["runtime reserve per device (GiB)", report["reserve_gib_per_device"]],
        ["usable memory per device (GiB)", report["usable_gib_per_device"]],
    ]
    verdict = "fits" if report["fits"] else "DOES NOT FIT"
    title = (
        f"{escape(report['model'])} on {report['accelerator']} x{report['tensor_parallel']}, "
        f"{report['dtype']}: {verdict}"
    )
    table = make_table(title, ["figure", "predicted"], rows)
    lines = [] if report["fits"] else [f"Does not fit: {report['reason']}."]
    lines += report["notes"]
    if lines:
        table.caption = "\n".join(lines)
        table.caption_justify = "left"
    return table


def _calibration_table(rows: list[dict[str, Any]]) -> Table:
    body = []
    for row in rows:
        scale = 1e3 if row["metric"] == "tpot_s" else 1.0
        metric = "tpot_ms" if row["metric"] == "tpot_s" else row["metric"]
        accelerator_label = row["accelerator"]
        if row["cpu_cores"] is not None:
            accelerator_label += f" ({row['cpu_cores']} vCPU)"
        verdict = "outlier" if row["outlier"] else ("yes" if row["within_tolerance"] else "NO")
        body.append(
            [
                row["model"],
                accelerator_label,
                row["engine"],
                row["batch_size"],
                row["context_tokens"],
                metric,
                row["published"] * scale,
                row["predicted"] * scale,
                row["ratio"],
                verdict,
            ]
        )
    table = make_table(
        "Performance model vs published measurements",
        [
            "model",
            "accelerator",
            "engine",
            "batch",
            "context",
            "metric",
            "published",
            "predicted",
            "ratio",
            "within tolerance",
        ],
        body,
    )
    tolerances = sorted({f"{row['tolerance']:.0%}" for row in rows})
    table.caption = (
        f"ratio = predicted / published; within tolerance means within +/-{' or '.join(tolerances)}"
        ". Outliers are excluded from the check; -o json gives each row's source and reason."
    )
    table.caption_justify = "left"
    return table
