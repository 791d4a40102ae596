"""Request traces for the simulator: CSV files in the Vidur/Splitwise format, or synthetic ones.

A CSV (plain, or gzip-compressed when its name ends in ``.gz``) has the columns
``arrived_at,num_prefill_tokens,num_decode_tokens`` and optionally ``traffic_class`` (or
``class``: ``interactive``, ``standard`` or ``batch``); rows without a class draw one from a
class mix when one is given. Synthetic traces draw Poisson arrivals (or bursty gamma arrivals
with the same mean rate) from a seeded ``random.Random``.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from scheduler.errors import ConfigError
from scheduler.types import TrafficClass

REQUIRED_COLUMNS = ("arrived_at", "num_prefill_tokens", "num_decode_tokens")
CLASS_COLUMNS = ("traffic_class", "class")
"""Names the optional class column may have, first match wins."""
BURSTY_SHAPE = 0.25
"""Gamma shape of bursty inter-arrival times: coefficient of variation 1/sqrt(0.25) = 2."""

TokenSampler = Callable[[random.Random], int]
TokenSpec = tuple[float, float] | TokenSampler
"""Token counts: ``(mean, sd)`` of a normal rounded and floored at 1, or a sampler."""


@dataclass(frozen=True, slots=True)
class TraceRequest:
    """One request of a trace: when it arrives (seconds), its sizes, its class and its model."""

    arrived_at: float
    prompt_tokens: int
    output_tokens: int
    traffic_class: TrafficClass
    model: str


def load_trace(
    path: str | Path,
    *,
    model: str,
    default_class: TrafficClass = TrafficClass.STANDARD,
    mix: Mapping[TrafficClass, float] | None = None,
    rng: random.Random | None = None,
) -> list[TraceRequest]:
    """Read a trace CSV, sorted by arrival; ``ConfigError`` names the file and line of a bad row.

    A row without a class gets one drawn from ``mix`` (with ``rng``, seeded 0 if not given) or,
    without a mix, ``default_class``.
    """
    source = Path(path)
    draw = _class_drawer(mix, rng or random.Random(0)) if mix is not None else None
    try:
        with _open_text(source) as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or ()
            missing = [c for c in REQUIRED_COLUMNS if c not in columns]
            if missing:
                raise ConfigError(f"{source}:1: trace lacks column(s) {', '.join(missing)}")
            class_column = next((c for c in CLASS_COLUMNS if c in columns), None)
            requests = []
            for row in reader:
                where = f"{source}:{reader.line_num}"
                label = (row.get(class_column) or "").strip() if class_column else ""
                requests.append(_row(row, model, label, draw, default_class, where))
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read trace {source}: {exc}") from exc
    return sorted(requests, key=lambda request: request.arrived_at)


def _open_text(source: Path) -> io.TextIOBase:
    if source.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(source, "rb"), encoding="utf-8", newline="")
    return source.open(newline="", encoding="utf-8")


def _row(
    row: Mapping[str, str | None],
    model: str,
    label: str,
    draw: Callable[[], TrafficClass] | None,
    default_class: TrafficClass,
    where: str,
) -> TraceRequest:
    try:
        arrived_at = float(row["arrived_at"] or "")
        prompt = _count(row["num_prefill_tokens"])
        output = _count(row["num_decode_tokens"])
        if label:
            traffic_class = TrafficClass(label)
        else:
            traffic_class = draw() if draw is not None else default_class
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: bad trace row {dict(row)}: {exc}") from exc
    if not math.isfinite(arrived_at) or arrived_at < 0:
        raise ConfigError(f"{where}: arrived_at must be a finite number >= 0, got {arrived_at}")
    if prompt < 1 or output < 1:
        raise ConfigError(f"{where}: a request needs at least one prompt and one output token")
    return TraceRequest(arrived_at, prompt, output, traffic_class, model)


def first_seconds(trace: Sequence[TraceRequest], duration_s: float) -> list[TraceRequest]:
    """The requests arriving within ``duration_s`` seconds of the trace's first arrival."""
    if not trace:
        return []
    start = min(request.arrived_at for request in trace)
    return [request for request in trace if request.arrived_at - start < duration_s]


def _count(text: str | None) -> int:
    value = float(text or "")
    if not value.is_integer():
        raise ValueError(f"token count {text!r} is not a whole number")
    return int(value)


def synthetic_trace(
    rng: random.Random,
    *,
    model: str,
    duration_s: float,
    rate_per_s: float,
    mix: Mapping[TrafficClass, float],
    prompt: TokenSpec,
    output: TokenSpec,
    bursty: bool = False,
) -> list[TraceRequest]:
    """Arrivals over ``[0, duration_s)`` at ``rate_per_s`` on average, classes drawn by ``mix``
    share (normalised). Poisson, or with ``bursty`` gamma inter-arrivals of CV 2."""
    if duration_s <= 0 or rate_per_s <= 0:
        raise ConfigError("a synthetic trace needs a positive duration and rate")
    draw = _class_drawer(mix, rng)
    requests: list[TraceRequest] = []
    now = 0.0
    while True:
        if bursty:
            now += rng.gammavariate(BURSTY_SHAPE, 1.0 / (rate_per_s * BURSTY_SHAPE))
        else:
            now += rng.expovariate(rate_per_s)
        if now >= duration_s:
            return requests
        traffic_class = draw()
        requests.append(
            TraceRequest(now, _sample(prompt, rng), _sample(output, rng), traffic_class, model)
        )


def _class_drawer(
    mix: Mapping[TrafficClass, float], rng: random.Random
) -> Callable[[], TrafficClass]:
    """Draws a class by ``mix`` share (normalised) from ``rng``."""
    shares = [(cls, share) for cls, share in sorted(mix.items()) if share > 0]
    if not shares or any(share < 0 for share in mix.values()):
        raise ConfigError("the class mix needs non-negative shares, at least one positive")
    total = sum(share for _, share in shares)

    def draw() -> TrafficClass:
        point = rng.random() * total
        for cls, share in shares:
            if point < share:
                return cls
            point -= share
        return shares[-1][0]

    return draw


def _sample(spec: TokenSpec, rng: random.Random) -> int:
    if isinstance(spec, tuple):
        mean, sd = spec
        return max(1, round(rng.gauss(mean, sd)))
    return max(1, spec(rng))
