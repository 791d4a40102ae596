"""The public traces of ``benchmarks/data`` (Vidur / Splitwise, MIT) as simulator traces.

``mixed_trace`` builds the benchmarks' workload: Splitwise conversation arrivals as interactive
chat and arXiv summarization lengths as batch work on the chat model, Splitwise code arrivals as
standard traffic on the small model. ``scale`` overlays that many copies of each trace, copy
``i`` circularly shifted by ``i/scale`` of the trace's span (the rate grows ``scale``-fold, each
copy keeps its bursts); batch arrivals are Poisson at ``BATCH_RATE_PER_S`` per copy over the
duration, lengths drawn from the arXiv set with the seeded RNG.
"""

from __future__ import annotations

import csv
import gzip
import random
from collections.abc import Sequence
from pathlib import Path

from scheduler.simulator import TraceRequest, load_trace
from scheduler.types import TrafficClass

DATA = Path(__file__).resolve().parent / "data"
CONVERSATION = DATA / "splitwise_conv.csv.gz"
CODE = DATA / "splitwise_code.csv.gz"
SUMMARIZATION = DATA / "arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv.gz"

CHAT_MODEL = "llama-3.1-8b"
SMALL_MODEL = "qwen2.5-0.5b"
BATCH_RATE_PER_S = 2.0
"""Summarization requests per second per copy (7,200 documents an hour)."""


def overlaid(trace: Sequence[TraceRequest], copies: int) -> list[TraceRequest]:
    """``copies`` copies of ``trace``, copy ``i`` shifted by ``i/copies`` of its span (mod the
    span), sorted by arrival."""
    if not trace or copies <= 1:
        return sorted(trace, key=lambda r: r.arrived_at)
    start = min(r.arrived_at for r in trace)
    span = max(r.arrived_at for r in trace) - start
    out = []
    for copy in range(copies):
        shift = span * copy / copies
        for r in trace:
            at = start + (r.arrived_at - start + shift) % span if span > 0 else r.arrived_at
            out.append(TraceRequest(at, r.prompt_tokens, r.output_tokens, r.traffic_class, r.model))
    return sorted(out, key=lambda r: r.arrived_at)


def summarization_lengths() -> list[tuple[int, int]]:
    """(prompt, output) tokens of every arXiv summarization request."""
    with gzip.open(SUMMARIZATION, "rt", newline="", encoding="utf-8") as handle:
        return [
            (int(row["num_prefill_tokens"]), int(row["num_decode_tokens"]))
            for row in csv.DictReader(handle)
        ]


def mixed_trace(*, duration_s: float, scale: int, seed: int) -> list[TraceRequest]:
    """Interactive chat + batch summarization (chat model) + standard code (small model) over
    the first ``duration_s`` seconds, ``scale`` copies of each."""
    chat = load_trace(CONVERSATION, model=CHAT_MODEL, default_class=TrafficClass.INTERACTIVE)
    code = load_trace(CODE, model=SMALL_MODEL, default_class=TrafficClass.STANDARD)
    rng = random.Random(seed)
    lengths = summarization_lengths()
    batch: list[TraceRequest] = []
    now = rng.expovariate(BATCH_RATE_PER_S * scale)
    while now < duration_s:
        prompt, output = rng.choice(lengths)
        batch.append(TraceRequest(now, prompt, output, TrafficClass.BATCH, CHAT_MODEL))
        now += rng.expovariate(BATCH_RATE_PER_S * scale)
    requests = [
        r
        for r in overlaid(chat, scale) + overlaid(code, scale) + batch
        if r.arrived_at < duration_s
    ]
    return sorted(requests, key=lambda r: r.arrived_at)
