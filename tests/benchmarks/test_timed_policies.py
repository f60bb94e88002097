"""The policy benchmark on an engine of known speed (benchmarks.timed_policies).

The scheduler, warmup and planners are the real ones; only the engine is a
sleeping stand-in, which is the point of that benchmark (it takes the host's
stalls out of engine time). Assertions are on counts and on what the
scheduler ran, not on times, except lower bounds a sleep cannot undercut.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from benchmarks import timed_policies as tp
from benchmarks.loadgen import Poisson, schedule
from benchmarks.scenarios import Policy


def _static(preferred: int = 16, delay_us: int = 2000) -> Policy:
    return Policy(f"static p{preferred}/{delay_us}us", params=(("batching_policy", "static"),),
                  preferred_batch_size=(preferred,), max_queue_delay_us=delay_us)  # fmt: skip


def test_engine_sleeps_its_time_and_stalls_the_chosen_calls() -> None:
    engine = tp.TimedEngine(0.002, 0.001)
    x = np.zeros((4, 1), dtype=np.float32)
    start = time.perf_counter()
    out = engine.infer({"x": x})
    assert time.perf_counter() - start >= 0.006  # 2 ms + 4 x 1 ms
    assert out["y"] is x and engine.calls == [4]
    stalled = tp.TimedEngine(0.002, 0.0, stall_rate=1.0, stall_factor=3.0)
    start = time.perf_counter()
    stalled.infer({"x": x})
    assert time.perf_counter() - start >= 0.006  # every call stalled: 3 x 2 ms


@pytest.mark.parametrize(
    "kwargs", [{"stall_rate": 1.5}, {"stall_rate": -0.1}, {"stall_factor": 0.5}]
)
def test_engine_refuses_impossible_settings(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="stall"):
        tp.TimedEngine(0.001, 0.0, **kwargs)


@pytest.mark.parametrize("policy", [tp.policies()[0], _static()], ids=["adaptive", "static"])
def test_every_scheduled_request_is_counted_once(policy: Policy) -> None:
    engine = tp.TimedEngine(0.001, 0.0001)
    arrival, seconds = Poisson(60), 0.8
    point = asyncio.run(tp.run_point(engine, policy, arrival, seconds, fraction=0.1, seed=3))
    sent = len(schedule(arrival, seconds, seed=3))
    assert point.sent == sent > 20
    assert point.on_time + point.late + point.refused == sent
    assert len(point.latency_ms) == point.on_time + point.late
    # Warmup ran every size once untimed and five times timed, then the load:
    # what the engine ran after warmup is the answered requests' rows.
    warmup_rows = 6 * sum(range(1, tp.MAX_BATCH + 1))
    assert sum(engine.calls) - warmup_rows == 2 * len(point.latency_ms)
    if policy.name.startswith("static"):
        assert point.refused == 0  # Triton's semantics: no admission control


def test_path_time_is_charged_to_every_answer() -> None:
    engine = tp.TimedEngine(0.001, 0.0)
    # Deadline 25 ms, 24 ms of it spent outside the scheduler: no answer can
    # count as on time, and the adaptive policy refuses what it cannot make.
    point = asyncio.run(tp.run_point(engine, tp.policies()[0], Poisson(40), 0.5, fraction=0.1,
                                     path_s=0.024))  # fmt: skip
    assert point.on_time == 0 and point.sent > 0
    assert all(ms >= 24.0 for ms in point.latency_ms)


@pytest.mark.parametrize("policy", [tp.policies()[0], _static()], ids=["adaptive", "static"])
def test_no_policy_answers_more_on_time_than_the_optimum(policy: Policy) -> None:
    # 1.2x the engine's best throughput: even the optimum misses some.
    engine = tp.TimedEngine(0.004, 0.00025)
    arrival = Poisson(1.2 * tp.capacity_rps(engine))
    point = asyncio.run(
        tp.run_point(engine, policy, arrival, 0.5, fraction=1.2, seed=5, path_s=0.001)
    )
    best = tp.optimum_point(engine, arrival, 0.5, fraction=1.2, seed=5, path_s=0.001)
    assert best.policy == tp.OPTIMUM and best.sent == point.sent
    assert point.on_time <= best.on_time < best.sent
    assert best.refused == best.sent - best.on_time and not best.latency_ms


def test_a_share_of_requests_can_be_due_sooner() -> None:
    # Half the requests due in 3 ms, which no batch of this engine (>= 4 ms)
    # can meet: those are all refused or late, the rest all answered in time.
    engine = tp.TimedEngine(0.004, 0.0001)
    tight = tp.Tight(0.003, 0.5)
    arrival, seconds = Poisson(40), 0.8
    due = tp.deadlines(len(schedule(arrival, seconds, seed=2)), 0.025, tight, seed=2)
    assert set(due) == {0.003, 0.025} and due == tp.deadlines(len(due), 0.025, tight, seed=2)
    point = asyncio.run(tp.run_point(engine, tp.policies()[0], arrival, seconds, fraction=0.05,
                                     seed=2, tight=tight))  # fmt: skip
    assert point.sent == len(due)
    assert point.on_time == due.count(0.025)
    assert point.refused + point.late == due.count(0.003)
    with pytest.raises(ValueError):
        tp.Tight(0.003, 1.5)


def test_mixed_deadlines_leave_the_optimum_out(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--arrival", "poisson", "--fractions", "0.05", "--seconds", "0.3", "--policy",
            "static p16/2000us", "--fixed-ms", "1"]  # fmt: skip
    args += ["--tight-ms", "10", "--tight-share", "0.2"]
    assert tp.main(args) == 0
    out = capsys.readouterr().out
    assert "20% of requests in 10 ms" in out and "static p16/2000us    0.05x" in out
    assert tp.OPTIMUM not in out


def _point(policy: str, fraction: float, on_time: int, sent: int = 100) -> tp.Point:
    return tp.Point(policy, fraction, offered_rps=float(sent), sent=sent, on_time=on_time,
                    late=sent - on_time, refused=0, latency_ms=[1.0] * sent)  # fmt: skip


def test_rounds_are_pooled_per_policy_and_load() -> None:
    a = _point("adaptive", 0.2, 99)
    a.reasons = {"refused:deadline": 1}
    b = _point("adaptive", 0.2, 97)
    b.reasons = {"refused:deadline": 2, "expired": 1}
    merged = tp.merge_rounds([a, b, _point("adaptive", 0.3, 50)])
    assert [(p.fraction, p.sent, p.on_time) for p in merged] == [(0.2, 200, 196), (0.3, 100, 50)]
    assert merged[0].reasons == {"refused:deadline": 3, "expired": 1}
    assert len(merged[0].latency_ms) == 200 and len(a.latency_ms) == 100  # inputs untouched


def test_goal_line_compares_with_the_best_static_candidate() -> None:
    points = [
        _point("adaptive", 0.2, 100, sent=100),
        _point("adaptive", 0.3, 149, sent=150),  # 99.3% kept: 149 req/s on time
        _point("static p8/1000us", 0.2, 90, sent=100),  # never keeps 99%
        _point("static p16/2000us", 0.2, 100, sent=100),
        _point("static p16/2000us", 0.3, 95, sent=150),
    ]
    line = tp.goal_line(points)
    assert "adaptive 149.0 req/s (1.49x)" in line
    assert "best static static p16/2000us 100.0 req/s" in line
    assert "no static policy" in tp.goal_line(points[:2])


def test_goal_line_bounds_the_ratio_when_no_static_keeps_the_attainment() -> None:
    # As the scenarios judge it: static's goodput at 99% is then only known
    # to lie below the lowest load offered to it.
    points = [_point("adaptive", 0.2, 100), _point("static p16/2000us", 0.2, 95)]
    line = tp.goal_line(points)
    assert "adaptive 100.0 req/s (at least 1.00x)" in line and "no static kept it" in line


def test_cli_runs_one_short_point(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--arrival", "poisson", "--fractions", "0.05", "--seconds", "0.3"]
    args += ["--policy", "static p16/2000us", "--fixed-ms", "1", "--row-ms", "0.1"]
    code = tp.main(args)
    out = capsys.readouterr().out
    assert code == 0
    assert "static p16/2000us    0.05x" in out and "goodput at >= 99% attainment" in out
    assert f"{tp.OPTIMUM}    0.05x" in out and f"{tp.OPTIMUM} " in out.splitlines()[-1]


def test_cli_can_compute_the_optimum_alone(capsys: pytest.CaptureFixture[str]) -> None:
    assert tp.main(["--optimum-only", "--fractions", "0.2", "0.3", "--seconds", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line[:26] for line in lines if line[21:26] in ("0.20x", "0.30x")]
    assert rows == [f"{tp.OPTIMUM:<20} 0.20x", f"{tp.OPTIMUM:<20} 0.30x"]
    assert not any(line.startswith(("adaptive", "static")) for line in lines)


@pytest.mark.parametrize(
    "args",
    [
        ["--seconds", "0"],
        ["--fractions", "-0.1"],
        ["--stall-rate", "2"],
        ["--deadline-ms", "1"],
        ["--tight-ms", "10", "--tight-share", "2"],
        ["--tight-ms", "10", "--tight-share", "0.2", "--optimum-only"],
    ],
)
def test_cli_refuses_bad_settings(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        tp.main(args)
    assert exit_info.value.code == 2
    assert "error:" in capsys.readouterr().err
