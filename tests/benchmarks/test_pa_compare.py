"""benchmarks.pa_compare: how its rounds are summed up (perf_analyzer itself is not run here)."""

from __future__ import annotations

import pytest

from benchmarks import pa_compare


def test_medians_are_taken_per_column() -> None:
    runs = [(100.0, 9.0, 300.0), (300.0, 1.0, 200.0), (200.0, 5.0, 900.0)]
    assert pa_compare._median(runs) == (200.0, 5.0, 300.0)


def test_medians_of_no_runs_is_none() -> None:
    # Every run of a server failed (PyTriton's server died): no median to print.
    assert pa_compare._median([]) is None


def test_a_row_gives_the_cpu_ratio_to_bare() -> None:
    bare = (2000.0, 10.0, 300.0)
    row = pa_compare._row(8, "unary", "inferd", (1000.0, 20.0, 450.0), bare)
    assert row.startswith("c=8   unary:")
    assert "inferd" in row and "450 us/req" in row
    assert "50% of bare's req/s" in row
    assert "1.50x its CPU" in row
    bare_row = pa_compare._row(8, "unary", "bare", bare, bare)
    assert "300 us/req" in bare_row and "of bare's" not in bare_row


def test_a_failed_run_is_said_and_a_missing_bare_gives_no_ratio() -> None:
    failed = pa_compare._row(32, "streaming", "pytriton", None, (1.0, 1.0, 1.0))
    assert "pytriton failed" in failed
    alone = pa_compare._row(32, "unary", "inferd", (1000.0, 20.0, 450.0), None)
    assert "450 us/req" in alone and "of bare's" not in alone


def test_rounds_flag_is_accepted_and_checked_by_argparse() -> None:
    with pytest.raises(SystemExit):
        pa_compare.main(["--rounds", "x"])
