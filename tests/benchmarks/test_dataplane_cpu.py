"""benchmarks.dataplane_cpu: the request path's CPU per request, in process."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import dataplane_cpu


def test_a_short_run_measures_each_task_count(
    demo_repository: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--tasks", "1", "4", "--requests", "60", "--rounds", "1", "--profile"]
    assert dataplane_cpu.main([*args, "--repository", str(demo_repository)]) == 0
    out = capsys.readouterr().out
    table = out.split("no gRPC\n", 1)[1].split("\n\n", 1)[0].splitlines()[1:]
    rows = {int(line.split()[1]): line.split() for line in table}
    assert set(rows) == {1, 4}
    for row in rows.values():
        cpu, loop, rows_per_batch = (float(x) for x in row[2:5])
        assert cpu > 0 and 0 < loop <= cpu * 1.05  # the loop thread is part of the process
        assert rows_per_batch >= 1.0
    # One task sends one request at a time: every batch holds one row.
    assert float(rows[1][4]) == 1.0
    assert "Python calls/request; most own time:" in out
    assert "decode_request" in out  # the request path was profiled, not the warm-up


def test_arguments_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    for bad in (["--tasks", "0"], ["--requests", "0"], ["--rounds", "0"]):
        with pytest.raises(SystemExit) as exit_info:
            dataplane_cpu.main(bad)
        assert exit_info.value.code == 2
    assert "must be at least 1" in capsys.readouterr().err


def test_a_failing_worker_is_reported(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="the measuring process failed"):
        dataplane_cpu.run_worker(dataplane_cpu.ROOT, tmp_path / "missing", [1], 5, False)
