"""The grid's paired slow host: spells drawn by time, met alike by every caller."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import batching_grid as grid
from benchmarks.slow_spells import SlowSpells
from benchmarks.timed_policies import TimedEngine
from benchmarks.virtual_time import Clock


def test_a_call_runs_slower_only_for_the_part_inside_a_spell() -> None:
    spells = SlowSpells(0.1, 2.5, 0.01, seed=3)
    spells.duration(0.0, 5.0)  # draws spells over the first seconds
    s, e = spells.starts[1], spells.ends[1]
    assert spells.duration(s, (e - s) / 2.5) == pytest.approx(e - s)  # wholly inside
    gap = spells.starts[1] - spells.ends[0]
    assert spells.duration(spells.ends[0], gap / 2) == pytest.approx(gap / 2)  # wholly outside
    # Starting 1 ms before the spell: 1 ms at full speed, the rest 2.5x slower.
    assert spells.duration(s - 0.001, 0.002) == pytest.approx(0.001 + 0.001 * 2.5)


def test_spells_cover_their_share_of_time_and_repeat_with_the_seed() -> None:
    spells = SlowSpells(0.1, 2.5, 0.01, seed=7)
    spells.duration(0.0, 200.0)
    covered = sum(e - s for s, e in zip(spells.starts, spells.ends, strict=True))
    assert 0.08 < covered / spells.ends[-1] < 0.12
    # The same seed, asked in another order, gives the same answers: pairing.
    other = SlowSpells(0.1, 2.5, 0.01, seed=7)
    probes = [(t * 0.37, 0.005) for t in range(50)]
    forward = [spells.duration(t, w) for t, w in probes]
    backward = [other.duration(t, w) for t, w in reversed(probes)][::-1]
    assert forward == backward
    assert max(forward) > 0.005 and min(forward) == pytest.approx(0.005)


def test_bad_settings_are_refused() -> None:
    for share, factor, mean in [(0.0, 2, 0.01), (1.0, 2, 0.01), (0.1, 0.5, 0.01), (0.1, 2, 0)]:
        with pytest.raises(ValueError):
            SlowSpells(share, factor, mean)


def test_the_paired_host_slows_every_policy_on_the_same_spells() -> None:
    trace = grid.TRACES[0]  # poisson
    quiet = {p.policy: p for p in grid.run_trace(trace, [0.4], rounds=1, seconds=1.0)}
    paired = {
        p.policy: p
        for p in grid.run_trace(trace, [0.4], rounds=1, seconds=1.0, host=grid.NOISY_PAIRED)
    }
    assert paired[grid.TRITON].sent == quiet[grid.TRITON].sent
    assert max(paired[grid.TRITON].latency_ms) > max(quiet[grid.TRITON].latency_ms)
    engine = TimedEngine(0.005, 0.0, stall_rate=0.1, stall_factor=2.5, spell_s=0.01)
    assert engine.spells is not None and engine.origin is None


def test_time_outside_the_engine_follows_calls_once_load_starts() -> None:
    clock = Clock()
    engine = TimedEngine(0.005, 0.0, clock=clock, outside_s=0.001)  # no spells
    x = {"x": np.zeros((2, 1), np.float32)}
    engine.infer(x)
    assert engine.last_outside_s == 0.0  # warmup: before the load's origin
    engine.origin = clock.now
    engine.infer(x)
    assert engine.last_outside_s == 0.001 and engine.last_s == pytest.approx(0.005)
