"""Trace loading and synthesis: CSV rows, classes, bad lines, seeded arrivals."""

from __future__ import annotations

import random
import statistics
from pathlib import Path

import pytest

from scheduler.errors import ConfigError
from scheduler.simulator import TraceRequest, load_trace, synthetic_trace
from scheduler.types import TrafficClass

SHARED_TRACE = Path("/work/shared/data/traces/splitwise_conv.csv")


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


def test_the_shared_splitwise_trace_loads_when_present() -> None:
    if not SHARED_TRACE.exists():
        pytest.skip(f"{SHARED_TRACE} is not present on this machine")
    trace = load_trace(SHARED_TRACE, model="m")
    assert len(trace) > 1000
    assert all(a.arrived_at <= b.arrived_at for a, b in zip(trace, trace[1:], strict=False))


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
