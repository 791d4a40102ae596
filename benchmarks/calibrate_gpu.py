"""Check the roofline performance model against a real NVIDIA GPU, in plain PyTorch.

    python benchmarks/calibrate_gpu.py [--out PATH] [--iters 20] [--eager]
    python benchmarks/calibrate_gpu.py --device cpu --tiny      # self-test of the code, no GPU

1. Probes the GPUs through NVML (``NvmlGpuProbe``) and prints what ``catalog_entry`` makes of
   them, as JSON.
2. Builds a Llama-3.1-8B-shaped model with random bf16 weights on cuda:0 (RMSNorm, RoPE, GQA
   through ``scaled_dot_product_attention``, SwiGLU, lm_head; fused QKV and gate/up GEMMs as
   vLLM has them) with a KV cache, and times with CUDA events (warm-up, median of ``--iters``)
   one prefill of a 1,024-token prompt and one decode step at batch 1, 8 and 32 with 1,024
   tokens already cached. Each pass is captured in a CUDA graph (``--eager`` turns that off),
   so kernel-launch latency does not count.
3. Prints measured vs ``replica_performance(...).prefill_seconds / decode_step_seconds`` for the
   catalog spec NVML resolved, as shipped and "kernels only" (vLLM's per-step CPU overheads set
   to 0, the right comparison for this harness), with the bandwidth / FLOP-rate efficiency the
   measurement implies.
4. Writes everything to ``--out`` (default ``benchmarks/out/calibration-<card>.json``).

Before timing it checks the model code: prefill-then-decode must give the logits a full prefill
gives (float32, tiny model). Needs an NVIDIA driver, nvidia-ml-py and a CUDA build of PyTorch;
without them it prints one line and exits 2. About 21 GB of GPU memory (16 GB of weights, 4.4 GB
of KV cache) and well under a minute on an H100.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nodes.discovery import (
    GpuInfo,
    GpuProbeUnavailable,
    LinuxCpuProbe,
    NvmlGpuProbe,
    catalog_entry,
    cpu_accelerator_for,
    describe_gpus,
)
from nodes.models import Dtype, ModelArchitecture, catalog_model, count_parameters
from nodes.performance import ReplicaPerformance, replica_performance

EXIT_UNAVAILABLE = 2
ROPE_THETA = 500_000.0
RMS_EPS = 1e-5


def tiny_architecture() -> ModelArchitecture:
    """The --tiny model: Llama-shaped, 2 layers, hidden 256."""
    shapes: dict[str, Any] = {
        "num_layers": 2,
        "hidden_size": 256,
        "intermediate_size": 512,
        "num_attention_heads": 4,
        "num_kv_heads": 2,
        "head_dim": 64,
        "vocab_size": 1024,
        "max_position_embeddings": 8192,
    }
    return ModelArchitecture(num_parameters=count_parameters(**shapes), **shapes)


class RandomLlama:
    """A Llama-architecture decoder with random weights and a preallocated KV cache.

    ``forward(tokens, start)`` runs ``tokens`` ([batch, T]) at positions ``start..start+T-1``
    against the cache (which it updates) and returns the last position's logits. Prefill is
    ``start == 0``; a decode step is ``T == 1``.
    """

    def __init__(
        self,
        torch: Any,
        arch: ModelArchitecture,
        *,
        device: str,
        dtype: Any,
        max_batch: int,
        max_len: int,
        seed: int = 0,
    ) -> None:
        self.torch, self.arch = torch, arch
        self.functional = torch.nn.functional
        torch.manual_seed(seed)
        hidden, heads, kv_heads = arch.hidden_size, arch.num_attention_heads, arch.num_kv_heads
        head_dim, inter = arch.head_dim, arch.intermediate_size

        def weight(rows: int, cols: int) -> Any:
            return torch.empty(rows, cols, device=device, dtype=dtype).normal_(0.0, cols**-0.5)

        def ones() -> Any:
            return torch.ones(hidden, device=device, dtype=dtype)

        self.embedding = weight(arch.vocab_size, hidden)
        self.layers = [
            {
                "norm1": ones(),
                "wqkv": weight((heads + 2 * kv_heads) * head_dim, hidden),
                "wo": weight(hidden, heads * head_dim),
                "norm2": ones(),
                "w13": weight(2 * inter, hidden),
                "w2": weight(hidden, inter),
            }
            for _ in range(arch.num_layers)
        ]
        self.final_norm = ones()
        self.lm_head = weight(arch.vocab_size, hidden)
        cache_shape = (max_batch, kv_heads, max_len, head_dim)
        self.cache = [
            (
                torch.zeros(cache_shape, device=device, dtype=dtype),
                torch.zeros(cache_shape, device=device, dtype=dtype),
            )
            for _ in range(arch.num_layers)
        ]
        inv_freq = 1.0 / ROPE_THETA ** (
            torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim
        )
        angles = torch.outer(torch.arange(max_len, device=device, dtype=torch.float32), inv_freq)
        self.cos, self.sin = angles.cos().to(dtype), angles.sin().to(dtype)

    def parameter_count(self) -> int:
        tensors = [self.embedding, self.final_norm, self.lm_head]
        tensors += [w for layer in self.layers for w in layer.values()]
        return sum(int(t.numel()) for t in tensors)

    def _norm(self, x: Any, weight: Any) -> Any:
        xf = x.float()
        xf = xf * self.torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + RMS_EPS)
        return xf.to(x.dtype) * weight

    def _rope(self, x: Any, start: int) -> Any:
        half = x.shape[-1] // 2
        cos = self.cos[start : start + x.shape[-2]]
        sin = self.sin[start : start + x.shape[-2]]
        x1, x2 = x[..., :half], x[..., half:]
        return self.torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)

    def _attention(self, x: Any, index: int, start: int) -> Any:
        arch, f = self.arch, self.functional
        batch, length, _ = x.shape
        heads, kv_heads, head_dim = arch.num_attention_heads, arch.num_kv_heads, arch.head_dim
        qkv = f.linear(x, self.layers[index]["wqkv"])
        q, k, v = qkv.split([heads * head_dim, kv_heads * head_dim, kv_heads * head_dim], dim=-1)
        q = self._rope(q.view(batch, length, heads, head_dim).transpose(1, 2), start)
        k = self._rope(k.view(batch, length, kv_heads, head_dim).transpose(1, 2), start)
        v = v.view(batch, length, kv_heads, head_dim).transpose(1, 2)
        cache_k, cache_v = self.cache[index]
        cache_k[:batch, :, start : start + length] = k
        cache_v[:batch, :, start : start + length] = v
        keys = cache_k[:batch, :, : start + length]
        values = cache_v[:batch, :, : start + length]
        if length == 1:
            # Decode: the query heads sharing a KV head become that head's "query positions",
            # which see every cached token, so no mask and no KV repeat.
            grouped = q.reshape(batch, kv_heads, heads // kv_heads, head_dim)
            out = f.scaled_dot_product_attention(grouped, keys, values)
            out = out.reshape(batch, 1, heads * head_dim)
        else:
            if start != 0:
                raise ValueError("multi-token passes must start at position 0 (prefill)")
            out = f.scaled_dot_product_attention(q, keys, values, is_causal=True, enable_gqa=True)
            out = out.transpose(1, 2).reshape(batch, length, heads * head_dim)
        return f.linear(out, self.layers[index]["wo"])

    def forward(self, tokens: Any, start: int) -> Any:
        f = self.functional
        x = f.embedding(tokens, self.embedding)
        for index, layer in enumerate(self.layers):
            x = x + self._attention(self._norm(x, layer["norm1"]), index, start)
            gate, up = f.linear(self._norm(x, layer["norm2"]), layer["w13"]).chunk(2, dim=-1)
            x = x + f.linear(f.silu(gate) * up, layer["w2"])
        return f.linear(self._norm(x[:, -1], self.final_norm), self.lm_head)


def self_check(torch: Any, device: str) -> float:
    """Largest |logit difference| between a full prefill and prefill-then-decode (tiny, fp32)."""
    model = RandomLlama(
        torch,
        tiny_architecture(),
        device=device,
        dtype=torch.float32,
        max_batch=2,
        max_len=64,
        seed=1,
    )
    tokens = torch.randint(0, model.arch.vocab_size, (2, 33), device=device)
    full = model.forward(tokens, 0)
    model.forward(tokens[:, :32], 0)
    stepped = model.forward(tokens[:, 32:], 32)
    return float((full - stepped).abs().max())


def timed(torch: Any, device: str, run: Callable[[], Any], warmup: int, iters: int) -> list[float]:
    """Seconds per call of ``run``: CUDA events on a GPU, perf_counter on a CPU."""
    for _ in range(warmup):
        run()
    times: list[float] = []
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        for _ in range(iters):
            begin = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            begin.record()
            run()
            end.record()
            end.synchronize()
            times.append(begin.elapsed_time(end) / 1e3)
        return times
    for _ in range(iters):
        began = time.perf_counter()
        run()
        times.append(time.perf_counter() - began)
    return times


def runner(
    torch: Any, model: RandomLlama, tokens: Any, start: int, graph: bool
) -> Callable[[], Any]:
    """A call running one pass; with ``graph`` it replays a captured CUDA graph of the pass."""
    if not graph:
        return lambda: model.forward(tokens, start).argmax(-1)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            model.forward(tokens, start).argmax(-1)
    torch.cuda.current_stream().wait_stream(stream)
    cuda_graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(cuda_graph):
        model.forward(tokens, start).argmax(-1)
    return cuda_graph.replay  # type: ignore[no-any-return]


@dataclasses.dataclass
class Row:
    phase: str
    batch: int
    tokens: int
    times_s: list[float]
    predicted_s: float
    kernels_only_s: float
    achieved: float
    achieved_unit: str
    efficiency: float

    @property
    def median_s(self) -> float:
        return statistics.median(self.times_s)


def measure(
    torch: Any,
    model: RandomLlama,
    args: argparse.Namespace,
    shipped: ReplicaPerformance,
    kernels: ReplicaPerformance,
) -> list[Row]:
    arch, spec, device = model.arch, shipped.accelerator, args.device
    graph = device == "cuda" and not args.eager
    rows: list[Row] = []
    prompt = torch.randint(0, arch.vocab_size, (1, args.prompt_tokens), device=device)
    times = timed(torch, device, runner(torch, model, prompt, 0, graph), args.warmup, args.iters)
    flops = (
        2.0 * arch.num_parameters * args.prompt_tokens
        + 2.0 * arch.num_layers * args.prompt_tokens**2 * arch.num_attention_heads * arch.head_dim
    )
    rate = flops / statistics.median(times)
    rows.append(
        Row(
            "prefill",
            1,
            args.prompt_tokens,
            times,
            shipped.prefill_seconds(args.prompt_tokens),
            kernels.prefill_seconds(args.prompt_tokens),
            rate / 1e12,
            "TFLOP/s",
            rate / (spec.bf16_tflops * 1e12),
        )
    )
    for batch in args.batches:
        step = torch.randint(0, arch.vocab_size, (batch, 1), device=device)
        times = timed(
            torch, device, runner(torch, model, step, args.context, graph), args.warmup, args.iters
        )
        read = arch.num_parameters * 2.0 + batch * args.context * arch.kv_bytes_per_token()
        rate = read / statistics.median(times)
        rows.append(
            Row(
                "decode",
                batch,
                args.context,
                times,
                shipped.decode_step_seconds(batch, args.context),
                kernels.decode_step_seconds(batch, args.context),
                rate / 1e9,
                "GB/s",
                rate / (spec.memory_bandwidth_gbps * 1e9),
            )
        )
    return rows


def print_table(card: str, rows: list[Row]) -> None:
    print(f"\n{card}: measured (median) vs predicted by nodes.performance")
    header = (
        f"{'pass':8} {'batch':>5} {'tokens':>6} {'measured ms':>11} {'predicted':>9} "
        f"{'pred/meas':>9} {'kernels-only':>12} {'pred/meas':>9} {'achieved':>16} {'eff':>5}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        measured = row.median_s
        print(
            f"{row.phase:8} {row.batch:5d} {row.tokens:6d} {measured * 1e3:11.2f} "
            f"{row.predicted_s * 1e3:9.2f} {row.predicted_s / measured:9.2f} "
            f"{row.kernels_only_s * 1e3:12.2f} {row.kernels_only_s / measured:9.2f} "
            f"{row.achieved:9.1f} {row.achieved_unit:>6} {row.efficiency:5.2f}"
        )
    print(
        "eff: achieved / datasheet (prefill: FLOP rate, decode: bytes read of weights + KV); "
        "the model assumes 0.65 and 0.80."
    )


def fail(message: str) -> int:
    print(f"calibrate_gpu: {message}", file=sys.stderr)
    return EXIT_UNAVAILABLE


def _gpu_json(gpu: GpuInfo) -> dict[str, Any]:
    spec, warnings = catalog_entry(gpu)
    return {**dataclasses.asdict(gpu), "catalog": spec.name, "warnings": warnings}


def _matching_gpu(torch: Any, gpus: tuple[GpuInfo, ...]) -> GpuInfo:
    """The NVML GPU that is cuda:0 (CUDA may order devices differently from NVML)."""
    props = torch.cuda.get_device_properties(0)
    uuid = str(getattr(props, "uuid", "")).removeprefix("GPU-")
    for gpu in gpus:
        if uuid and gpu.uuid.removeprefix("GPU-") == uuid:
            return gpu
    return next((gpu for gpu in gpus if gpu.name == props.name), gpus[0])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--out", type=Path, help="JSON output (default benchmarks/out/calibration-<card>.json)"
    )
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="a 2-layer, hidden-256 model: exercises the code, predicts nothing",
    )
    parser.add_argument("--iters", type=int, default=20, help="timed repetitions (median)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--prompt-tokens", type=int, default=1024)
    parser.add_argument("--context", type=int, default=1024, help="cached tokens per decode")
    parser.add_argument(
        "--batches",
        type=lambda s: [int(b) for b in s.split(",")],
        default=[1, 8, 32],
        help="decode batch sizes, comma-separated",
    )
    parser.add_argument("--eager", action="store_true", help="no CUDA graphs")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    hardware, driver = None, None
    if args.device == "cuda":
        try:
            hardware = describe_gpus(NvmlGpuProbe())
            driver = NvmlGpuProbe().driver_version()
        except GpuProbeUnavailable as exc:
            return fail(f"no NVIDIA GPU/driver found: {exc}")
        if hardware is None:
            return fail("no NVIDIA GPU/driver found: NVML sees no GPU")
    try:
        import torch
    except ImportError:
        return fail("PyTorch is not installed (pip install torch)")
    if args.device == "cuda" and not torch.cuda.is_available():
        return fail(f"PyTorch {torch.__version__} cannot use the GPU (a CPU-only build?)")

    record: dict[str, Any] = {
        "command": [sys.executable, *sys.argv],
        "torch": torch.__version__,
        "device": args.device,
        "tiny": args.tiny,
    }
    if hardware is not None:
        gpu = _matching_gpu(torch, hardware.gpus)
        spec, _ = catalog_entry(gpu)
        probe = {
            "driver": driver,
            "gpus": [_gpu_json(g) for g in hardware.gpus],
            "declared": f"{hardware.count}x {hardware.accelerator.name}",
            "ray_type": hardware.ray_type,
            "nvlink_islands": hardware.nvlink_islands,
            "warnings": hardware.warnings,
        }
        print(json.dumps(probe, indent=2))
        record.update(
            card=spec.name,
            nvml_name=gpu.name,
            driver=driver,
            cuda=torch.version.cuda,
            device_name=torch.cuda.get_device_name(0),
            probe=probe,
        )
    else:
        spec = cpu_accelerator_for(LinuxCpuProbe().cpu())
        record.update(card="cpu", device_name=platform.processor() or platform.machine())

    drift = self_check(torch, args.device)
    record["self_check_max_logit_diff"] = drift
    if drift > 1e-3:
        return fail(f"model self-check failed: decode disagrees with prefill by {drift:.2e}")

    arch = tiny_architecture() if args.tiny else catalog_model("llama-3.1-8b").architecture
    max_len = max(args.prompt_tokens, args.context + 1)
    model = RandomLlama(
        torch,
        arch,
        device=args.device,
        dtype=torch.bfloat16,
        max_batch=max(args.batches),
        max_len=max_len,
    )
    if model.parameter_count() != arch.num_parameters:
        return fail(f"built {model.parameter_count()} weights, expected {arch.num_parameters}")
    shipped = replica_performance(arch, Dtype.BF16, spec)
    kernels = replica_performance(
        arch,
        Dtype.BF16,
        spec,
        constants=dataclasses.replace(
            shipped.constants,
            step_overhead_s=0.0,
            prefill_overhead_s=0.0,
            step_overhead_per_seq_s=0.0,
        ),
    )
    with torch.inference_mode():
        rows = measure(torch, model, args, shipped, kernels)
    print_table(f"{record['card']} ({record['device_name']})", rows)

    record.update(
        spec=dataclasses.asdict(spec),
        model=arch.model_dump(),
        dtype="bfloat16",
        cuda_graphs=args.device == "cuda" and not args.eager,
        iters=args.iters,
        warmup=args.warmup,
        fits=shipped.fits,
        rows=[{**dataclasses.asdict(row), "median_s": row.median_s} for row in rows],
    )
    card = re.sub(r"[^A-Za-z0-9._-]+", "-", str(record["card"]))
    suffix = "-tiny" if args.tiny else ""
    out = args.out or Path("benchmarks/out") / f"calibration-{card}{suffix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
