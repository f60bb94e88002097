"""Load generator, report files and the smoke scenario end to end.

Load runs are a second or two against the session's demo server; the
generator itself runs in spawned processes as in a real benchmark.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from benchmarks import loadgen
from benchmarks.loadgen import (
    ADMISSION_REFUSAL,
    Bursty,
    InputSpec,
    LoadResult,
    Poisson,
    Samples,
    Step,
    TargetRefused,
    Workload,
    check_target,
    percentiles,
    refused_at_arrival,
    run_closed,
    run_open,
    schedule,
)
from benchmarks.report import (
    PointResult,
    RunReport,
    check_targets,
    format_table,
    judge_goodput_goal,
    report_dict,
    write_report,
)
from benchmarks.scenarios import SCENARIOS, GoodputGoal, Targets

ROOT = Path(__file__).resolve().parents[2]
DIGITS = Workload("digits_mlp", (InputSpec("pixels", (1, 64), high=16.0),), outputs=("label",))


# --------------------------------------------------------------------------- live load


def test_closed_loop_counts_and_merges_workers(server_address: str) -> None:
    result = run_closed(server_address, DIGITS, concurrency=4, duration_s=1.0, warmup_s=0.2,
                        workers=2)  # fmt: skip
    s = result.summary()
    assert result.workers == 2 and result.concurrency == 4
    assert s.valid, s.invalid_reason
    assert s.sent > 50 and s.ok == s.sent and s.errors == {}
    assert 0 < s.latency_ms["p50"] <= s.latency_ms["p99"] <= s.latency_ms["max"]
    assert s.throughput_rps == pytest.approx(s.ok / 1.0, rel=0.05)
    assert s.slo_attainment == 1.0 and s.refusal_rate == 0.0 and s.client_cpu > 0


def test_closed_loop_counts_errors_by_status(server_address: str) -> None:
    missing = Workload("no_such_model", DIGITS.inputs)
    s = run_closed(server_address, missing, concurrency=2, duration_s=0.5, warmup_s=0.1).summary()
    assert s.ok == 0 and s.sent > 0
    assert s.errors == {"NOT_FOUND": s.sent}
    assert s.error_rate == 1.0 and s.throughput_rps == 0.0
    assert math.isnan(s.latency_ms["p99"])


def test_open_loop_poisson_follows_the_schedule(server_address: str) -> None:
    arrival, duration, warmup = Poisson(200), 1.5, 0.2
    result = run_open(server_address, DIGITS, arrival=arrival, duration_s=duration,
                      warmup_s=warmup, seed=7)  # fmt: skip
    s = result.summary()
    planned = schedule(arrival, warmup + duration, seed=7)
    in_window = int(np.count_nonzero(planned >= warmup))
    assert s.sent == in_window, s  # every scheduled arrival was sent, none invented
    assert s.ok == s.sent, s.errors
    assert s.offered_rps == 200
    # Sub-ms on an idle machine. A shared CI box stalls now and then (a p99 of
    # 13.6 ms was seen), so the tail is bounded by how many sends ran late, not
    # by a percentile: a client that drifted behind its schedule would have most
    # of them late, one that waited for answers all of them.
    lags_ms = (result.samples.sent - result.samples.scheduled) * 1e3
    assert s.lag_ms["p50"] < 1.0, s.lag_ms
    assert lags_ms.min() >= 0.0, "a request was sent before its scheduled time"
    assert np.count_nonzero(lags_ms > 5.0) <= 0.05 * s.sent, s.lag_ms
    scheduled = np.sort(result.samples.scheduled)
    np.testing.assert_allclose(scheduled, planned[planned >= warmup] - warmup, atol=1e-9)


def test_open_loop_mixed_deadlines_go_with_their_arrivals(server_address: str) -> None:
    # A 10 µs deadline cannot be met over gRPC: those requests come back
    # DEADLINE_EXCEEDED (their own timeout was sent; gRPC's timers are coarse,
    # so a quick answer now and then beats it, and still counts late), the 1 s
    # ones OK.
    mix = ((0.4, 0.01), (0.6, 1000.0))
    mixed = dataclasses.replace(DIGITS, deadline_mix=mix)
    arrival, duration, warmup = Poisson(300), 1.0, 0.2
    result = run_open(server_address, mixed, arrival=arrival, duration_s=duration,
                      warmup_s=warmup, seed=5, workers=2, priority="normal")  # fmt: skip
    samples = result.samples
    planned = schedule(arrival, warmup + duration, seed=5)
    due = mixed.deadlines_s(len(planned), seed=5)[planned >= warmup]
    order = np.argsort(samples.scheduled)
    np.testing.assert_array_equal(samples.deadline[order], due)  # each kept its deadline
    tight = samples.deadline == 1e-5
    assert np.mean(tight) == pytest.approx(0.4, abs=0.08)
    deadline_exceeded = grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
    assert np.mean(samples.status[tight] == deadline_exceeded) > 0.8
    assert np.all(samples.status[~tight] == 0)
    s = result.summary(lag_limit_ms=math.inf)
    assert s.slo_attainment == pytest.approx(np.mean(~tight))
    assert result.deadline_s == 1.0  # the longest


def test_closed_loop_cycles_through_mixed_deadlines(server_address: str) -> None:
    mixed = dataclasses.replace(DIGITS, deadline_mix=((0.5, 0.01), (0.5, 1000.0)))
    result = run_closed(server_address, mixed, concurrency=2, duration_s=0.5, warmup_s=0.1,
                        priority="normal")  # fmt: skip
    samples = result.samples
    assert len(samples) > 50
    assert np.mean(samples.deadline == 1e-5) == pytest.approx(0.5, abs=0.15)
    assert np.all(samples.status[samples.deadline == 1.0] == 0)
    assert result.summary().slo_attainment == pytest.approx(np.mean(samples.deadline == 1.0))


# --------------------------------------------------------------------------- target guard


@pytest.mark.parametrize("target", ["127.0.0.1:8001", "localhost:1", "[::1]:8001"])
def test_loopback_targets_are_allowed(target: str) -> None:
    assert check_target(target) == target


@pytest.mark.parametrize("target", ["10.0.0.5:8001", "example.com:8001", "127.0.0.1", "x:0"])
def test_other_targets_are_refused(target: str) -> None:
    with pytest.raises(TargetRefused):
        check_target(target)


def test_refusal_happens_before_any_process_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_start(*args: object, **kwargs: object) -> None:
        raise AssertionError("a load worker was started")

    monkeypatch.setattr(loadgen, "_run", no_start)
    with pytest.raises(TargetRefused, match=r"--allow-remote 192\.0\.2\.1"):
        run_closed("192.0.2.1:8001", DIGITS, concurrency=1, duration_s=1)
    with pytest.raises(TargetRefused):
        run_open("192.0.2.1:8001", DIGITS, arrival=Poisson(1), duration_s=1,
                 allow_remote="192.0.2.2")  # fmt: skip
    assert check_target("192.0.2.1:8001", allow_remote="192.0.2.1")


def test_cli_load_refuses_remote_target(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.__main__ import main

    assert main(["load", "--url", "192.0.2.1:8001", "--concurrency", "1"]) == 2
    assert "--allow-remote" in capsys.readouterr().err


# --------------------------------------------------------------------------- statistics


def test_percentiles_are_nearest_rank() -> None:
    values = list(range(100, 0, -1))  # 1..100, unsorted
    assert percentiles(values) == [50, 90, 95, 99, 100]
    assert percentiles([7.0]) == [7.0] * 5
    assert all(math.isnan(v) for v in percentiles([]))
    assert percentiles(list(range(1, 1001)), (50, 99.9)) == [500, 999]


def _result(
    latency_ms: list[float],
    status: list[int],
    *,
    lag_ms: float = 0.0,
    refused: list[bool] | None = None,
    deadline_ms: list[float] | None = None,
) -> LoadResult:
    n = len(status)
    sent = np.linspace(0, 0.5, n)
    if refused is None:
        refused = [code in (8, 14) for code in status]
    deadline = np.asarray(deadline_ms if deadline_ms is not None else [25.0] * n) / 1e3
    samples = Samples(sent - lag_ms / 1e3, sent, np.asarray(latency_ms) / 1e3,
                      np.asarray(status, dtype=np.int16), np.asarray(refused),
                      deadline)  # fmt: skip
    return LoadResult("open", "127.0.0.1:1", "m", 2, 1.0, 0.025, None, 100.0, 1, samples)


def test_summary_throughput_goodput_slo_and_refusals() -> None:
    # OK fast, OK but late, refused (UNAVAILABLE), shed early (DEADLINE_EXCEEDED
    # before the deadline = refusal), timed out (at the deadline), unfinished.
    res = _result([5, 30, 1, 2, 25, math.nan], [0, 0, 14, 4, 4, -1])
    s = res.summary()
    assert (s.sent, s.ok) == (6, 2)
    assert s.throughput_rps == 2.0 and s.rows_per_s == 4.0
    assert s.goodput_rps == 1.0
    assert s.slo_attainment == pytest.approx(1 / 6)
    assert s.refusal_rate == pytest.approx(2 / 6)
    assert s.errors == {"UNAVAILABLE": 1, "DEADLINE_EXCEEDED": 2, "UNFINISHED": 1}
    assert s.valid and s.lag_ms["p99"] == pytest.approx(0.0)


def test_each_request_is_counted_against_its_own_deadline() -> None:
    # Both answered OK in 20 ms: on time for 50 ms, late for 15 ms. A
    # DEADLINE_EXCEEDED after 10 ms is early (a refusal) for 15 ms, and one
    # after 15 ms is the tight request's own timeout, not a refusal.
    res = _result([20, 20, 10, 15], [0, 0, 4, 4], deadline_ms=[50, 15, 15, 15],
                  refused=[False, False, True, False])  # fmt: skip
    s = res.summary()
    assert s.slo_attainment == pytest.approx(1 / 4)
    assert s.goodput_rps == 1.0
    assert s.refusal_rate == pytest.approx(1 / 4)
    assert s.admitted_on_time == pytest.approx(1 / 3)
    assert s.latency_ms["p99"] == pytest.approx(20.0)
    assert s.slo_by_deadline_ms == {"15": 0.0, "50": 1.0}
    assert _result([20], [0]).summary().slo_by_deadline_ms == {}  # one deadline: no split


def test_mixed_deadlines_are_drawn_in_their_shares_from_the_seed() -> None:
    mixed = dataclasses.replace(DIGITS, deadline_mix=((0.3, 15.0), (0.7, 50.0)))
    due = mixed.deadlines_s(20_000, seed=3)
    assert set(np.unique(due)) == {0.015, 0.05}
    assert np.mean(due == 0.015) == pytest.approx(0.3, abs=0.015)
    np.testing.assert_array_equal(due, mixed.deadlines_s(20_000, seed=3))  # paired runs
    assert not np.array_equal(due, mixed.deadlines_s(20_000, seed=4))
    assert mixed.longest_deadline_ms == 50.0
    assert loadgen._drain_s(mixed, None) == pytest.approx(2.05)  # waits for the loosest
    single = dataclasses.replace(DIGITS, deadline_ms=25.0)
    assert set(single.deadlines_s(10, seed=0)) == {0.025}
    assert set(DIGITS.deadlines_s(10, seed=0)) == {math.inf}  # no deadline
    for bad in (((0.5, 15.0),), ((0.5, 15.0), (0.6, 50.0)), ((1.0, 0.0),), ((-0.1, 1), (1.1, 2))):
        with pytest.raises(ValueError, match="deadline_mix"):
            dataclasses.replace(DIGITS, deadline_mix=bad)


def test_batcher_mixed_offers_the_grids_mixed_deadlines() -> None:
    from benchmarks.batching_grid import TRACES, grid_policies
    from benchmarks.runner import capacity_workload, workload

    scenario = SCENARIOS["batcher-mixed"]
    wl = workload(scenario)
    grid = next(t for t in TRACES if t.name == "mixed")
    assert grid.tight is not None
    assert wl.deadline_mix == ((grid.tight.share, grid.tight.seconds * 1e3),
                               (1 - grid.tight.share, grid.deadline_s * 1e3))  # fmt: skip
    # Where one bound is needed (drain, the adaptive budget) it is the loose one.
    assert wl.longest_deadline_ms == scenario.deadline_ms == 50.0
    assert loadgen._drain_s(wl, None) == pytest.approx(2.05)
    assert scenario.policies[0].params == grid_policies(grid)[0].params
    assert set(capacity_workload(scenario).deadlines_s(100, seed=0)) == {math.inf}


def test_admitted_on_time_counts_queue_expiries_as_admitted_misses() -> None:
    # OK fast, OK late, UNAVAILABLE at arrival, inferd's admission refusal,
    # expired in the queue (early DEADLINE_EXCEEDED, but admitted), client
    # deadline (admitted, late), unfinished (admitted).
    res = _result(
        [5, 30, 1, 2, 10, 25, math.nan],
        [0, 0, 14, 4, 4, 4, -1],
        refused=[False, False, True, True, False, False, False],
    )
    s = res.summary()
    assert s.admitted_on_time == pytest.approx(1 / 5)
    # The refusal rate still counts every early "no" (the client cannot tell).
    assert s.refusal_rate == pytest.approx(3 / 7)
    everything_refused = _result([1, 1], [14, 14]).summary()
    assert math.isnan(everything_refused.admitted_on_time)


def test_admission_refusals_are_told_from_queue_expiries_by_the_servers_words() -> None:
    from inferd.server.scheduler.admission import ADMISSION_REFUSAL as SERVER_TEXT

    assert ADMISSION_REFUSAL == SERVER_TEXT
    deadline = grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
    assert refused_at_arrival(deadline, f"{SERVER_TEXT}: predicted 30.1 ms, 20.0 ms left")
    assert not refused_at_arrival(deadline, "deadline expired while the request was queued")
    assert not refused_at_arrival(deadline, "Deadline Exceeded")  # the client's own deadline
    assert refused_at_arrival(grpc.StatusCode.UNAVAILABLE.value[0], "queue is full")
    assert not refused_at_arrival(0, "")


def test_open_loop_lag_marks_point_invalid() -> None:
    res = _result([5.0] * 10, [0] * 10, lag_ms=3.0)
    assert not res.summary().valid
    assert "lag" in res.summary().invalid_reason
    assert res.summary(lag_limit_ms=5.0).valid


def test_merge_concatenates_samples_not_percentiles() -> None:
    a = _result([1.0] * 99, [0] * 99)
    b = _result([100.0], [0])
    merged = LoadResult.merge([a, b])
    assert len(merged.samples) == 100 and merged.workers == 2
    assert merged.offered_rps == 200.0
    assert merged.summary().latency_ms["p99.9"] == pytest.approx(100.0)


def test_arrival_processes_keep_their_mean_rate() -> None:
    assert len(schedule(Poisson(1000), 10.0, seed=1)) == pytest.approx(10_000, rel=0.05)
    bursty = schedule(Bursty(1000, factor=4, on_fraction=0.2, period_s=0.5), 10.0, seed=1)
    assert len(bursty) == pytest.approx(10_000, rel=0.08)
    # Bursts: the busiest 20 % of 50 ms bins carry far more than 20 % of arrivals.
    counts = np.sort(np.histogram(bursty, bins=200, range=(0, 10))[0])[::-1]
    assert counts[:40].sum() > 0.6 * counts.sum()
    step = schedule(Step((100.0, 1000.0), 1.0), 2.0, seed=1)
    assert np.count_nonzero(step < 1.0) < np.count_nonzero(step >= 1.0) / 4
    with pytest.raises(ValueError):
        Bursty(100, factor=6, on_fraction=0.2)


# --------------------------------------------------------------------------- report


def _report(mode: str) -> RunReport:
    scenario = SCENARIOS["smoke" if mode == "closed" else "batcher-poisson"]
    points = []
    for i, (policy, point) in enumerate([("adaptive", 0.5), ("adaptive", 1.0), ("static", 0.5)]):
        res = _result([5.0, 10.0, 20.0, math.nan], [0, 0, 0, -1])
        summary = res.summary()
        targets = Targets(p95_ms=15, p99_ms=50)
        x = point if mode == "open" else 2**i
        misses = check_targets(summary, targets)
        points.append(PointResult(policy, i, x, f"p{i}", summary, targets, misses, 3.5))
    return RunReport(scenario, "now", 1.0, 1, {"cpu_count": 2}, capacity_rows_per_s=500.0,
                     points=points)  # fmt: skip


@pytest.mark.parametrize("mode", ["closed", "open"])
def test_report_writes_json_and_csv(tmp_path: Path, mode: str) -> None:
    report = _report(mode)
    files = write_report(report, tmp_path)
    data = json.loads((tmp_path / "summary.json").read_text())  # strict JSON: NaN -> null
    assert data["passed"] is False and len(data["misses"]) == 3
    assert data["points"][0]["summary"]["latency_ms"]["p50"] == pytest.approx(
        10.0
    )  # nearest rank of 3
    with (tmp_path / "points.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["policy"] for r in rows] == ["adaptive", "adaptive", "static"]
    assert rows[0]["mean_batch"] == "3.5" and rows[0]["errors"] == "UNFINISHED:1"
    assert {tmp_path / "summary.json", tmp_path / "points.csv"} <= set(files)


@pytest.mark.parametrize("mode", ["closed", "open"])
def test_report_writes_plots(tmp_path: Path, mode: str) -> None:
    pytest.importorskip("matplotlib")
    files = write_report(_report(mode), tmp_path)
    pngs = {f.name for f in files if f.suffix == ".png"}
    assert pngs == (
        {"latency.png", "throughput.png"} | ({"goodput.png"} if mode == "open" else set())
    )
    for name in pngs:
        assert (tmp_path / name).read_bytes().startswith(b"\x89PNG")


# --------------------------------------------------------------------------- end to end


def test_smoke_scenario_end_to_end(tmp_path: Path, demo_repository: Path) -> None:
    out = tmp_path / "smoke"
    # --models serves the given repository; the default one would be built here.
    env = dict(os.environ, INFERD_DEMO_REPOSITORY=str(tmp_path / "never-built"))
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "smoke", "--duration-scale", "0.2",
         "--results", str(out), "--models", str(demo_repository)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=100,
    )  # fmt: skip
    # 1 only for a missed latency target (a busy machine), never a crash.
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    data = json.loads((out / "summary.json").read_text())
    assert [p["label"] for p in data["points"]] == ["c=1", "c=8"]
    assert all(p["summary"]["ok"] > 0 for p in data["points"])
    assert data["passed"] == (proc.returncode == 0)
    assert (out / "points.csv").is_file()
    assert not (tmp_path / "never-built").exists()
    assert time.monotonic() - started < 60


def test_bench_refuses_a_models_folder_that_is_not_there(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from benchmarks.__main__ import main

    with pytest.raises(SystemExit) as exit_info:
        main(["smoke", "--models", str(tmp_path / "absent"), "--results", str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"--models {tmp_path / 'absent'}: not a directory" in err, err


# --------------------------------------------------------------------------- ceilings, configs


def test_raw_engine_ceiling(demo_repository: Path) -> None:
    from benchmarks.raw_engine import measure_engine, nearest

    points = measure_engine(demo_repository, "digits_mlp", (1, 4), seconds_per_size=0.1)
    assert [p.batch for p in points] == [1, 4]
    for p in points:
        assert p.calls_per_s > 0 and p.rows_per_s == pytest.approx(p.calls_per_s * p.batch)
        # Single calls' spread, in ms like the best window's mean call.
        assert 0 < p.call_p50_ms <= p.call_p99_ms
        assert p.call_p50_ms < 10 * p.ms_per_call
    assert nearest(points, 3.2) is points[1] and nearest([], 1) is None


def test_policy_edits_reach_the_served_config(demo_repository: Path, tmp_path: Path) -> None:
    from benchmarks.runner import prepare_repository
    from benchmarks.scenarios import Policy
    from inferd.server.repository import ModelRepository
    from inferd.server.scheduler.options import options_from_config

    policy = Policy("static", params=(("batching_policy", "static"),),
                    preferred_batch_size=(16,), max_queue_delay_us=2000)  # fmt: skip
    repo = prepare_repository(demo_repository, "dense_reference", policy, tmp_path)
    source = ModelRepository(repo).source("dense_reference")
    options = options_from_config(source.config)
    assert options.policy == "static" and options.preferred_sizes == (16,)
    assert options.max_queue_delay_s == pytest.approx(0.002)
    # The source repository is untouched (files are linked, the config rewritten).
    original = (demo_repository / "dense_reference" / "config.pbtxt").read_text()
    assert "static" not in original


# --------------------------------------------------------------------------- goodput goal


def _point(policy: str, label: str, slo: float, goodput: float, valid: bool = True) -> PointResult:
    summary = dataclasses.replace(
        _result([5.0], [0]).summary(), slo_attainment=slo, goodput_rps=goodput, valid=valid
    )
    return PointResult(policy, 0, float(label.rstrip("x")), label, summary)


def test_goodput_goal_compares_each_policys_best_point_that_keeps_the_attainment() -> None:
    goal = GoodputGoal(attainment=0.99, ratio=1.3)
    points = [
        _point("adaptive", "0.1x", 1.0, 40.0),
        _point("adaptive", "0.15x", 0.993, 60.0),
        _point("adaptive", "0.2x", 0.95, 75.0),  # more goodput, but below the attainment
        _point("static", "0.1x", 0.995, 40.0),
        _point("static", "0.15x", 0.98, 58.0),
        _point("static", "0.2x", 0.999, 80.0, valid=False),  # the client lagged: not counted
    ]
    judged = judge_goodput_goal(points, ["adaptive", "static"], goal)
    assert judged.best == {"adaptive": ("0.15x", 60.0), "static": ("0.1x", 40.0)}
    assert judged.ratio == pytest.approx(1.5) and judged.met
    assert "ratio 1.50" in judged.line and "(goal 1.3x: met)" in judged.line

    level = judge_goodput_goal(points[:2] + points[3:4], ["adaptive", "static"], goal)
    assert level.ratio == pytest.approx(1.5)
    even = judge_goodput_goal([points[0], points[3]], ["adaptive", "static"], goal)
    assert even.ratio == pytest.approx(1.0) and not even.met


def test_when_the_others_never_keep_the_attainment_the_ratio_is_a_lower_bound() -> None:
    # Static misses 99% even at the lowest load tried: its goodput at 99% lies
    # below that load's offered rate, not at zero (which read as infinitely
    # better, or as met when adaptive kept 99% only at that same load).
    goal = GoodputGoal(attainment=0.99, ratio=1.3)

    def offered(point: PointResult, rps: float) -> PointResult:
        point.summary = dataclasses.replace(point.summary, offered_rps=rps)
        return point

    static = [
        offered(_point("static", "0.1x", 0.98, 49.0), 50.0),
        offered(_point("static", "0.2x", 0.90, 90.0), 100.0),
    ]
    same_load = [offered(_point("adaptive", "0.1x", 0.996, 49.8), 50.0), *static]
    judged = judge_goodput_goal(same_load, ["adaptive", "static"], goal)
    assert judged.bound and judged.ratio == pytest.approx(49.8 / 50.0) and not judged.met
    assert "ratio at least 1.00" in judged.line and "NOT met" in judged.line

    higher = [offered(_point("adaptive", "0.2x", 0.992, 99.2), 100.0), *static]
    judged = judge_goodput_goal(higher, ["adaptive", "static"], goal)
    assert judged.bound and judged.ratio == pytest.approx(99.2 / 50.0) and judged.met

    neither = [offered(_point("adaptive", "0.1x", 0.9, 45.0), 50.0), *static]
    judged = judge_goodput_goal(neither, ["adaptive", "static"], goal)
    assert not judged.bound and judged.ratio == 0.0 and not judged.met


def test_a_missed_goodput_goal_fails_the_run_and_is_printed() -> None:
    goal = GoodputGoal(attainment=0.99, ratio=1.3)
    points = [_point("adaptive", "0.1x", 0.9, 40.0), _point("static", "0.1x", 1.0, 40.0)]
    report = RunReport(SCENARIOS["batcher-bursty"], "now", 1.0, 1, {}, points=points)
    report.goodput_goal = judge_goodput_goal(points, ["adaptive", "static"], goal)
    assert report.goodput_goal.best["adaptive"] is None and report.goodput_goal.ratio == 0.0
    assert report.misses == [report.goodput_goal.line]
    assert "adaptive none, static 40.0 req/s at 0.1x" in format_table(report)
    assert report_dict(report)["passed"] is False


def test_the_table_prints_the_raw_engines_call_spread() -> None:
    from benchmarks.raw_engine import RawPoint

    report = RunReport(SCENARIOS["batcher-poisson"], "now", 1.0, 1, {})
    report.raw_engine = [RawPoint(8, 100.0, 800.0, 10.0, 9.5, 12.0), RawPoint(1, 50.0, 50.0, 20.0)]
    table = format_table(report)
    assert "raw engine batch   8:       800 rows/s      100 calls/s; one call p50 9.50 ms, " \
        "p99 12.00 ms (1.26x)" in table  # fmt: skip
    assert "one call p50 nan ms, p99 nan ms (nanx)" in table  # a point without call times
