"""Overload, short version of ``python -m benchmarks.overload`` (5 s instead of
30 s): twice the measured capacity against a 25 ms latency budget. The server
must shed what it cannot serve in time (refused fast, nothing else failing),
keep admitted requests within the budget by its own clock, and keep its
memory flat. Thresholds are looser than the benchmark's verdict because the
test shares a small machine with whatever else runs."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest

from benchmarks import overload


@pytest.mark.slow
def test_twice_capacity_is_shed_fast_with_flat_memory(demo_repository: Path) -> None:
    report = overload.run(seconds=5, capacity_seconds=3, source=demo_repository, log=False)
    info = asdict(report)
    assert report.verdict["overloaded"], info  # the load really was too much
    assert report.verdict["no_other_errors"], info
    assert report.verdict["memory_flat"], info
    # Admitted requests: answered within the budget by the server's clock.
    assert report.server.answered > 0 and report.server_late_fraction <= 0.05, info
    # The rest: refused, typically well before the budget would have run out.
    assert report.refused_p50_ms <= report.budget_ms, info
    assert report.ok_p50_ms <= report.budget_ms, info
