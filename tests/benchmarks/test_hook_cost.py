"""benchmarks.hook_cost: telemetry hooks' CPU per request, with and without Triton's families."""

from __future__ import annotations

import pytest

from benchmarks import hook_cost


def test_the_replay_feeds_every_family_as_a_server_would() -> None:
    from inferd.server.telemetry import VersionTelemetry

    hooks = hook_cost.observer(triton=True)
    assert isinstance(hooks, VersionTelemetry) and hooks.n is not None and hooks.m is not None
    assert hook_cost.cpu_us_per_request(hooks, batch=4, requests=40) > 0
    assert hooks.n.success._value.get() == 40
    assert hooks.n.exec_count._value.get() == 10
    assert hooks.m.pending._value.get() == 0
    plain = hook_cost.observer(triton=False)
    assert isinstance(plain, VersionTelemetry) and plain.n is None


def test_a_short_run_prints_one_line_per_batch_size(capsys: pytest.CaptureFixture[str]) -> None:
    assert hook_cost.main(["--batch", "1", "3", "--requests", "300", "--rounds", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[0] == "batch" and len(lines) == 3
    for line, batch in zip(lines[1:], (1, 3), strict=True):
        size, plain, triton, added = line.split()
        assert int(size) == batch and float(plain) > 0 and float(triton) > 0
        assert float(added) == pytest.approx(float(triton) - float(plain), abs=0.011)
