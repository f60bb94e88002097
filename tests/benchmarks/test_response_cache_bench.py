"""benchmarks.response_cache: a Zipf repeat trace with and without the cache."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import response_cache


def test_the_trace_repeats_the_first_keys_most() -> None:
    trace = response_cache.zipf_trace(100, 1.1, 20_000)
    counts = np.bincount(trace, minlength=100)
    assert counts.sum() == 20_000 and trace.min() >= 0 and trace.max() < 100
    assert counts[0] > counts[1] > counts[9] > counts[99]  # 1/k^s weights
    # key 1 against key 2: 2^1.1 = 2.14 times as often, within sampling noise.
    assert 1.8 < counts[0] / counts[1] < 2.6


def test_a_short_run_reports_both_models(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--seconds", "1", "--rounds", "1", "--keys", "20", "--hidden", "16", "--layers", "1"]
    assert response_cache.main([*args, "--concurrency", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {
        line.split()[0]: line.split()
        for line in lines
        if line.split()[:1] in (["plain"], ["cached"]) and "/" not in line
    }
    assert float(rows["plain"][-1].rstrip("%")) == 0  # no cache, no hits
    assert float(rows["cached"][-1].rstrip("%")) > 50  # 20 keys: nearly all repeats
    assert lines[-1].startswith("cached / plain: throughput")
