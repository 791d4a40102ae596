"""``parse_engine_metrics`` on vLLM-shaped Prometheus expositions."""

from __future__ import annotations

import pytest

from nodes.engines.metrics import EngineMetrics, parse_engine_metrics

# What a vLLM 0.10-era server with two engines (data parallel) prints, trimmed: HELP/TYPE
# lines, labels whose values hold spaces, commas, braces and escaped quotes, a histogram, a
# counter, and samples with timestamps.
VLLM_TWO_ENGINES = r"""
# HELP python_gc_objects_collected_total Objects collected during gc
# TYPE python_gc_objects_collected_total counter
python_gc_objects_collected_total{generation="0"} 1234.0
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="Qwen/Qwen2.5-0.5B-Instruct"} 3.0
vllm:num_requests_running{engine="1",model_name="Qwen/Qwen2.5-0.5B-Instruct"} 4.0 1712345678901
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="my model, v2 {beta}"} 2.0
vllm:num_requests_waiting{engine="1",model_name="say \"hi\", then } wait"} 5.0 1712345678901
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="Qwen/Qwen2.5-0.5B-Instruct"} 0.25
vllm:kv_cache_usage_perc{engine="1",model_name="Qwen/Qwen2.5-0.5B-Instruct"} 0.625
# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.001",model_name="q"} 0.0
vllm:time_to_first_token_seconds_count{engine="0",model_name="q"} 17.0
vllm:time_to_first_token_seconds_sum{engine="0",model_name="q"} 1.5
# HELP vllm:prompt_tokens_total Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{engine="0",model_name="q"} 99999.0
"""


def test_realistic_exposition_with_two_engines() -> None:
    assert parse_engine_metrics(VLLM_TWO_ENGINES) == EngineMetrics(
        running=7, waiting=7, kv_usage=0.625
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("", EngineMetrics(0, 0, 0.0), id="empty"),
        pytest.param(
            "# HELP vllm:num_requests_running x\n# TYPE vllm:num_requests_running gauge\n",
            EngineMetrics(0, 0, 0.0),
            id="only-help-and-type",
        ),
        pytest.param(
            "vllm:num_requests_running 2\nvllm:num_requests_waiting 1\n"
            "vllm:kv_cache_usage_perc 0.5\n",
            EngineMetrics(2, 1, 0.5),
            id="no-labels",
        ),
        pytest.param(
            'vllm:num_requests_running{model_name="m"} 6 1712345678901\n',
            EngineMetrics(6, 0, 0.0),
            id="timestamp-ignored",
        ),
        pytest.param(
            'vllm:gpu_cache_usage_perc{model_name="m"} 0.4\n',
            EngineMetrics(0, 0, 0.4),
            id="legacy-kv-name",
        ),
        pytest.param(
            'vllm:gpu_cache_usage_perc{model_name="m"} 0.9\n'
            'vllm:kv_cache_usage_perc{model_name="m"} 0.3\n',
            EngineMetrics(0, 0, 0.3),
            id="new-kv-name-wins-over-legacy",
        ),
        pytest.param(
            'vllm:kv_cache_usage_perc{model_name="m"} 0.0\n'
            'vllm:gpu_cache_usage_perc{model_name="m"} 0.9\n',
            EngineMetrics(0, 0, 0.0),
            id="new-kv-name-wins-even-at-zero",
        ),
        pytest.param(
            'vllm:gpu_cache_usage_perc{engine="0"} 0.2\n'
            'vllm:gpu_cache_usage_perc{engine="1"} 0.7\n',
            EngineMetrics(0, 0, 0.7),
            id="legacy-kv-max-over-engines",
        ),
        pytest.param(
            "vllm:kv_cache_usage_perc 1.7\n", EngineMetrics(0, 0, 1.0), id="kv-clamped-high"
        ),
        pytest.param(
            "vllm:kv_cache_usage_perc -0.1\n", EngineMetrics(0, 0, 0.0), id="kv-clamped-low"
        ),
        pytest.param(
            "vllm:num_requests_running 1e1\nvllm:num_requests_waiting 3.0\n",
            EngineMetrics(10, 3, 0.0),
            id="float-notation",
        ),
        pytest.param(
            "vllm:num_requests_running 2\r\nvllm:num_requests_waiting 1\r\n",
            EngineMetrics(2, 1, 0.0),
            id="crlf",
        ),
        pytest.param(
            "vllm:num_requests_running_total 50\n"  # a different metric sharing a prefix
            "vllm:num_requests_running_created 1.7e9\n"
            "vllm:num_requests_running 1\n",
            EngineMetrics(1, 0, 0.0),
            id="prefix-lookalikes",
        ),
    ],
)
def test_parse_table(text: str, expected: EngineMetrics) -> None:
    assert parse_engine_metrics(text) == expected


@pytest.mark.parametrize(
    "garbage",
    [
        "vllm:num_requests_running",  # no value
        "vllm:num_requests_running{model_name=\"m\"}",  # labels, no value
        "vllm:num_requests_running many",  # not a number
        "vllm:num_requests_running{model_name=\"m\"} 3,5",
        "num_requests_running 99",  # not vLLM's namespace
        "   vllm:num_requests_running 99",  # not at the start of a line
        "this is not prometheus at all",
        "{} 5",
        "\x00\x01\x02",
    ],
)
def test_garbage_lines_are_ignored(garbage: str) -> None:
    text = f"vllm:num_requests_running 2\n{garbage}\nvllm:num_requests_waiting 1\n"
    assert parse_engine_metrics(text) == EngineMetrics(2, 1, 0.0)


@pytest.mark.parametrize(
    "sample",
    ["vllm:num_requests_running NaN", "vllm:num_requests_waiting +Inf",
     'vllm:num_requests_running{engine="1"} -Inf'],
)
def test_non_finite_samples_are_ignored(sample: str) -> None:
    text = f"vllm:num_requests_running 2\n{sample}\nvllm:num_requests_waiting 1\n"
    assert parse_engine_metrics(text) == EngineMetrics(2, 1, 0.0)


def test_non_finite_kv_usage_reads_as_empty_not_full() -> None:
    assert parse_engine_metrics("vllm:kv_cache_usage_perc NaN\n").kv_usage == 0.0
