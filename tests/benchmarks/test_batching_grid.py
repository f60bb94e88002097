"""The batching grid on simulated time (benchmarks.virtual_time,
benchmarks.batching_grid, benchmarks.traces)."""

from __future__ import annotations

import time

import pytest

from benchmarks import batching_grid as grid
from benchmarks import timed_policies as tp
from benchmarks import virtual_time as vt
from benchmarks.loadgen import Poisson, schedule
from benchmarks.traces import SHIFT, make_arrival


def _point(policy_index: int, seed: int) -> tp.Point:
    clock = vt.Clock()
    engine = tp.TimedEngine(0.004, 0.0003, clock=clock)
    policy = grid.grid_policies(grid.TRACES[0])[policy_index]
    return vt.run(clock, tp.run_point(engine, policy, Poisson(400), 2.0, fraction=0.5, seed=seed))


def test_simulated_time_runs_the_scheduler_without_sleeping_and_repeats_exactly() -> None:
    start = time.perf_counter()
    first = _point(0, seed=5)
    wall = time.perf_counter() - start
    assert first.sent == len(schedule(Poisson(400), 2.0, seed=5)) > 500
    assert first.on_time + first.late + first.refused == first.sent
    assert first.on_time > 0
    again = _point(0, seed=5)
    assert (again.on_time, again.late, again.refused) == (first.on_time, first.late, first.refused)
    assert again.latency_ms == first.latency_ms
    # Answers take at least the engine time of one batch of one request.
    assert min(first.latency_ms) >= 4.0 + 2 * 0.3 - 1e-6
    assert wall < 60  # 2 s of load on a busy host: any real sleeping would show here too


def test_simulated_time_restores_the_scheduler_modules_clock() -> None:
    import inferd.server.scheduler.dispatch as dispatch

    _point(len(grid.grid_policies(grid.TRACES[0])) - 1, seed=1)  # triton default
    assert dispatch.time is time


def test_virtual_threads_run_a_call_posted_while_busy_when_the_engine_is_free() -> None:
    # One thread: the second call starts when the first's engine time ends
    # (not after its time outside the engine), as a batch handed ahead does.
    import asyncio

    clock = vt.Clock()
    seconds = iter([0.010, 0.004])
    last = [0.0]
    threads = vt.VirtualThreads(lambda: last[0], lambda: 0.002, count=1)
    log: list[tuple[str, float]] = []

    def call(name: str) -> tuple[object, int, int, int]:
        log.append((f"start {name}", clock.now))
        last[0] = next(seconds)
        return name, 0, 0, 0

    async def main() -> None:
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def finished(name: str, result: object, error: BaseException | None) -> None:
            log.append((f"done {name}", clock.now))
            if name == "b":
                done.set_result(None)

        t0 = clock.now
        threads.post(loop, lambda r, e: finished("a", r, e), call, "a")
        threads.post(loop, lambda r, e: finished("b", r, e), call, "b")
        await done
        assert [(n, round(t - t0, 6)) for n, t in log] == [
            ("start a", 0.0), ("start b", 0.010), ("done a", 0.012), ("done b", 0.016),
        ]  # fmt: skip

    vt.run(clock, main())


def test_a_loop_with_nothing_left_to_wait_for_says_so() -> None:
    import asyncio

    async def forever() -> None:
        await asyncio.get_running_loop().create_future()

    with pytest.raises(RuntimeError, match="nothing scheduled"):
        vt.run(vt.Clock(), forever())


def test_shifting_trace_steps_through_its_phases_at_the_mean_rate() -> None:
    arrival = make_arrival("shifting", 600.0, 8.0)
    times = schedule(arrival, 8.0, seed=2)
    per_phase = [((times >= 2 * i) & (times < 2 * i + 2)).sum() / 2 for i in range(4)]
    for got, share in zip(per_phase, SHIFT, strict=True):
        assert got == pytest.approx(600 * share, rel=0.15)
    assert len(times) / 8 == pytest.approx(600, rel=0.1)
    with pytest.raises(ValueError, match="unknown trace"):
        make_arrival("lunar", 1.0, 1.0)


def test_verdicts_name_the_points_that_miss() -> None:
    def p(name: str, f: float, on_time: int, refused: int = 0) -> tp.Point:
        return tp.Point(name, f, 100.0, 100, on_time, 100 - on_time - refused, refused, [])

    results = {
        "poisson": [
            p(grid.ADAPTIVE, 0.9, 90, refused=10), p(grid.STRICT, 0.9, 80, refused=20),
            p("static a", 0.9, 95), p(grid.TRITON, 0.9, 92), p(grid.BOUND, 0.9, 99),
        ],
    }  # fmt: skip
    lines = grid.verdicts(results)
    assert lines[0].startswith("1.") and "NOT MET" in lines[0] and "poisson 0.90x" in lines[0]
    assert lines[3].startswith("4.") and "MET (1.0000 / 1.0000)" in lines[3]


def test_a_noisy_host_stalls_engine_calls_and_pins_the_reserve() -> None:
    trace = grid.TRACES[0]  # poisson
    quiet = grid.run_trace(trace, [0.4], rounds=1, seconds=1.0)
    noisy = grid.run_trace(trace, [0.4], rounds=1, seconds=1.0, host=grid.NOISY)
    by = {p.policy: p for p in quiet}
    loud = {p.policy: p for p in noisy}
    # Same arrivals; stalls make every policy slower, never faster.
    assert loud[grid.TRITON].sent == by[grid.TRITON].sent
    assert max(loud[grid.TRITON].latency_ms) > max(by[grid.TRITON].latency_ms)
    assert loud[grid.ADAPTIVE].on_time <= by[grid.ADAPTIVE].on_time
    assert grid.NOISY.reserve_s == 0.003 and grid.QUIET.reserve_s is None
