"""Trace loading and synthesis: CSV rows, classes, bad lines, seeded arrivals."""

from __future__ import annotations

import gzip
import random
import statistics
from pathlib import Path

import pytest

from scheduler.errors import ConfigError
from scheduler.simulator import TraceRequest, load_trace, synthetic_trace
from scheduler.simulator.trace import first_seconds
from scheduler.types import TrafficClass

REPO = Path(__file__).resolve().parents[3]
SPLITWISE_CONV = REPO / "benchmarks" / "data" / "splitwise_conv.csv.gz"


def test_csv_rows_become_requests_sorted_with_optional_class(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text(
        "arrived_at,num_prefill_tokens,num_decode_tokens,traffic_class\n"
        "1.5,100,20,interactive\n"
        "0.25,300,7,\n"
        "2.0,50.0,1,batch\n"
    )
    trace = load_trace(path, model="m", default_class=TrafficClass.STANDARD)
    assert trace == [
        TraceRequest(0.25, 300, 7, TrafficClass.STANDARD, "m"),
        TraceRequest(1.5, 100, 20, TrafficClass.INTERACTIVE, "m"),
        TraceRequest(2.0, 50, 1, TrafficClass.BATCH, "m"),
    ]


@pytest.mark.parametrize(
    "bad_row",
    ["x,10,10", "1.0,0,10", "1.0,10,-1", "-1,10,10", "1.0,10.5,3", "1.0,10,10,urgent", "1.0,10"],
)
def test_a_bad_row_is_a_config_error_naming_its_line(tmp_path: Path, bad_row: str) -> None:
    path = tmp_path / "bad.csv"
    header = "arrived_at,num_prefill_tokens,num_decode_tokens"
    if bad_row.count(",") == 3:
        header += ",traffic_class"
    path.write_text(f"{header}\n0.0,10,10\n{bad_row}\n")
    with pytest.raises(ConfigError, match=r"bad\.csv:3:"):
        load_trace(path, model="m")


def test_a_missing_column_or_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "cols.csv"
    path.write_text("arrived_at,num_prefill_tokens\n0.0,10\n")
    with pytest.raises(ConfigError, match="num_decode_tokens"):
        load_trace(path, model="m")
    with pytest.raises(ConfigError, match="cannot read"):
        load_trace(tmp_path / "absent.csv", model="m")


def test_the_shipped_splitwise_trace_loads_gzip_compressed() -> None:
    trace = load_trace(SPLITWISE_CONV, model="m", default_class=TrafficClass.INTERACTIVE)
    assert len(trace) == 19_366
    assert all(a.arrived_at <= b.arrived_at for a, b in zip(trace, trace[1:], strict=False))
    assert {r.traffic_class for r in trace} == {TrafficClass.INTERACTIVE}
    assert 3400 < trace[-1].arrived_at - trace[0].arrived_at < 3600


def test_a_class_column_named_class_is_read_and_rows_without_one_draw_from_the_mix(
    tmp_path: Path,
) -> None:
    path = tmp_path / "t.csv"
    rows = "".join(f"{i},10,5,{'batch' if i < 3 else ''}\n" for i in range(200))
    path.write_text("arrived_at,num_prefill_tokens,num_decode_tokens,class\n" + rows)
    mix = {TrafficClass.INTERACTIVE: 1.0, TrafficClass.STANDARD: 3.0}

    def load(seed: int) -> list[TraceRequest]:
        return load_trace(path, model="m", mix=mix, rng=random.Random(seed))

    trace = load(4)
    assert [r.traffic_class for r in trace[:3]] == [TrafficClass.BATCH] * 3  # given: kept
    drawn = [r.traffic_class for r in trace[3:]]
    assert set(drawn) == {TrafficClass.INTERACTIVE, TrafficClass.STANDARD}
    assert 0.6 < drawn.count(TrafficClass.STANDARD) / len(drawn) < 0.9
    assert trace == load(4) and trace != load(5)
    without_mix = load_trace(path, model="m", default_class=TrafficClass.BATCH)
    assert {r.traffic_class for r in without_mix} == {TrafficClass.BATCH}


def test_a_gzip_trace_reads_like_the_plain_one_and_a_corrupt_one_is_a_config_error(
    tmp_path: Path,
) -> None:
    text = "arrived_at,num_prefill_tokens,num_decode_tokens\n0.5,10,2\n0.1,20,3\n"
    plain, packed = tmp_path / "t.csv", tmp_path / "t.csv.gz"
    plain.write_text(text)
    packed.write_bytes(gzip.compress(text.encode()))
    assert load_trace(packed, model="m") == load_trace(plain, model="m")
    broken = tmp_path / "broken.csv.gz"
    broken.write_bytes(b"not gzip at all")
    with pytest.raises(ConfigError, match="cannot read trace"):
        load_trace(broken, model="m")


def test_first_seconds_keeps_arrivals_within_the_window_of_the_first() -> None:
    trace = [TraceRequest(t, 1, 1, TrafficClass.BATCH, "m") for t in (5.0, 5.5, 6.99, 7.0, 9.0)]
    assert [r.arrived_at for r in first_seconds(trace, 2.0)] == [5.0, 5.5, 6.99]
    assert first_seconds([], 10.0) == []


def _gaps(trace: list[TraceRequest]) -> list[float]:
    times = [request.arrived_at for request in trace]
    return [b - a for a, b in zip(times, times[1:], strict=False)]


def test_synthetic_trace_is_seeded_and_follows_rate_and_mix() -> None:
    def make(seed: int) -> list[TraceRequest]:
        return synthetic_trace(
            random.Random(seed),
            model="m",
            duration_s=200.0,
            rate_per_s=10.0,
            mix={TrafficClass.INTERACTIVE: 3, TrafficClass.BATCH: 1},
            prompt=(500, 100),
            output=lambda rng: rng.randint(1, 4),
        )

    trace = make(7)
    assert trace == make(7) and trace != make(8)
    assert 1800 < len(trace) < 2200
    assert all(0 <= r.arrived_at < 200.0 and r.prompt_tokens >= 1 for r in trace)
    assert {r.output_tokens for r in trace} <= {1, 2, 3, 4}
    interactive = sum(r.traffic_class is TrafficClass.INTERACTIVE for r in trace) / len(trace)
    assert 0.70 < interactive < 0.80
    assert not any(r.traffic_class is TrafficClass.STANDARD for r in trace)
    gaps = _gaps(trace)
    assert 0.8 < statistics.stdev(gaps) / statistics.mean(gaps) < 1.2  # Poisson: CV 1


def test_bursty_arrivals_keep_the_rate_but_cluster() -> None:
    trace = synthetic_trace(
        random.Random(3),
        model="m",
        duration_s=400.0,
        rate_per_s=10.0,
        mix={TrafficClass.STANDARD: 1},
        prompt=(100, 10),
        output=(10, 2),
        bursty=True,
    )
    gaps = _gaps(trace)
    assert 3000 < len(trace) < 5000
    assert statistics.stdev(gaps) / statistics.mean(gaps) > 1.5


def test_a_synthetic_trace_needs_a_positive_mix_and_rate() -> None:
    with pytest.raises(ConfigError):
        synthetic_trace(
            random.Random(0),
            model="m",
            duration_s=1,
            rate_per_s=1,
            mix={},
            prompt=(1, 0),
            output=(1, 0),
        )
    with pytest.raises(ConfigError):
        synthetic_trace(
            random.Random(0),
            model="m",
            duration_s=1,
            rate_per_s=0,
            mix={TrafficClass.BATCH: 1},
            prompt=(1, 0),
            output=(1, 0),
        )
