"""benchmarks.served_vs_raw: what it reads from perf_analyzer (pa_compare.read_perf)
and the statistics (perf_analyzer itself runs in the benchmark, not here)."""

from __future__ import annotations

import math

import pytest

from benchmarks import pa_compare, served_vs_raw

PA_OUTPUT = """
  Client:
    Request count: 1234
    Throughput: 4513.25 infer/sec
    p99 latency: 19012 usec
"""


def test_rows_per_second_and_p99_come_from_perf_analyzer() -> None:
    assert pa_compare.read_perf(PA_OUTPUT) == (4513.25, 19.012, 1234)
    with pytest.raises(RuntimeError, match="not understood"):
        pa_compare.read_perf("perf_analyzer: error while loading shared libraries")
    # A failed run names its error line, not the settings banner before it.
    banner = "*** Measurement Settings ***\n  Batch size: 1\n\nRequest concurrency: 8\n"
    with pytest.raises(RuntimeError) as info:
        pa_compare.read_perf(banner + "Failed to retrieve results from inference request.\n")
    assert str(info.value).endswith(": Failed to retrieve results from inference request.")
    with pytest.raises(RuntimeError, match=r"not understood: Request concurrency: 8$"):
        pa_compare.read_perf(banner)


def test_rows_per_batch_from_two_statistics_readings() -> None:
    before = served_vs_raw.counts({"model_stats": [{"inference_count": 80, "execution_count": 4}]})
    after = served_vs_raw.counts({"modelStats": [{"inferenceCount": 400, "executionCount": 14}]})
    assert served_vs_raw.rows_per_batch(before, after) == 32.0
    assert math.isnan(served_vs_raw.rows_per_batch(after, after))  # no batch ran
    assert served_vs_raw.counts({}) == (0, 0)


def test_engine_busy_counts_each_batch_once_over_the_run() -> None:
    # 10 batches of 4 requests (32 rows each) ran; each request carries its
    # batch's 5 ms, so 200 ms summed over requests is 50 ms of engine time.
    stats = {
        "model_stats": [
            {
                "inference_stats": {
                    "success": {"count": 40, "ns": 0},
                    "compute_input": {"ns": 40_000_000},
                    "compute_infer": {"ns": 150_000_000},
                    "computeOutput": {"ns": 10_000_000},
                }
            }
        ]
    }
    assert served_vs_raw.engine_time(stats) == (40, 200_000_000)
    assert served_vs_raw.engine_time({}) == (0, 0)
    # 320 rows at 3,200 rows/s: a 100 ms run, the engine busy for half of it.
    busy = served_vs_raw.engine_busy(((0, 0), (320, 10)), ((0, 0), (40, 200_000_000)), 3200.0)
    assert busy == pytest.approx(0.5)
    assert math.isnan(served_vs_raw.engine_busy(((0, 0), (0, 0)), ((0, 0), (0, 0)), 3200.0))
