"""The offline optimum: hand-checked cases, and agreement with an exhaustive
search that assumes neither arrival order nor batches of consecutive
arrivals (the two facts the dynamic program rests on)."""

from __future__ import annotations

import functools
import itertools
import random

import numpy as np
import pytest

from benchmarks.oracle import batch_seconds, most_on_time


def exhaustive(arrivals: list[float], deadline_s: float, batch_s: list[float]) -> int:
    """Any subset of the waiting requests as the next batch, started as soon
    as the slot is free and its members have arrived; the best count."""
    n, most = len(arrivals), len(batch_s) - 1

    @functools.cache
    def best(left: frozenset[int], free: float) -> int:
        top = 0
        for size in range(1, min(most, len(left)) + 1):
            for members in itertools.combinations(sorted(left), size):
                end = max(free, *(arrivals[j] for j in members)) + batch_s[size]
                if all(end <= arrivals[j] + deadline_s for j in members):
                    top = max(top, size + best(left - set(members), end))
        return top

    return best(frozenset(range(n)), float("-inf"))


def test_a_lone_request_is_answered_when_its_batch_fits_the_deadline() -> None:
    assert most_on_time([0.0], 0.010, [0.0, 0.010]) == 1
    assert most_on_time([0.0], 0.010, [0.0, 0.011]) == 0


def test_no_requests_answers_none() -> None:
    assert most_on_time([], 0.010, [0.0, 0.001]) == 0


def test_one_slot_answers_a_burst_only_as_fast_as_its_batches_run() -> None:
    # Ten requests at once, batches of at most 2 taking 4 ms, 10 ms to answer:
    # two batches end by 8 ms, a third would end at 12 ms.
    assert most_on_time([0.0] * 10, 0.010, [0.0, 0.003, 0.004]) == 4


def test_waiting_for_a_later_arrival_can_answer_more() -> None:
    # Arrivals at 0 and 1 ms. Answering the first at once (0-3 ms) leaves the
    # second to run 3-6 ms, past its 5.6 ms; waiting to batch both (1-4.5 ms)
    # answers both by the first one's 4.6 ms, and with 4.4 ms only one fits.
    assert most_on_time([0.0, 0.001], 0.0046, [0.0, 0.003, 0.0035]) == 2
    assert most_on_time([0.0, 0.001], 0.0044, [0.0, 0.003, 0.0035]) == 1


def test_a_batch_starts_only_once_its_last_member_has_arrived() -> None:
    # Units are arbitrary. Arrivals at 0, 1, 2; due 4 after arriving; a batch
    # of one or two takes 3. {0, 1} runs 1-4, so 2 could start only at 4 and
    # end at 7, past its 6: two answered, whichever two.
    assert most_on_time([0.0, 1.0, 2.0], 4.0, [0.0, 3.0, 3.0]) == 2


def test_arrivals_in_any_order_give_the_same_answer() -> None:
    times = [0.004, 0.0, 0.002, 0.0011, 0.003]
    assert most_on_time(times, 0.006, [0.0, 0.002, 0.003]) == most_on_time(
        sorted(times), 0.006, [0.0, 0.002, 0.003]
    )


@pytest.mark.parametrize("seed", range(60))
def test_matches_an_exhaustive_search(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randint(1, 7)
    arrivals = sorted(round(rng.uniform(0, 0.012), 4) for _ in range(n))
    most = rng.randint(1, 4)
    fixed, per = rng.uniform(0.001, 0.004), rng.uniform(0.0, 0.002)
    batch_s = [0.0] + [fixed + m * per for m in range(1, most + 1)]
    deadline = rng.uniform(0.003, 0.012)
    assert most_on_time(arrivals, deadline, batch_s) == exhaustive(arrivals, deadline, batch_s)


def test_batch_seconds_follows_the_engine_shape() -> None:
    assert batch_seconds(0.005, 0.001, rows=2, max_rows=5) == pytest.approx([0.0, 0.007, 0.009])
    with pytest.raises(ValueError):
        batch_seconds(0.005, 0.001, rows=4, max_rows=2)


def test_bad_batch_times_are_refused() -> None:
    with pytest.raises(ValueError):
        most_on_time([0.0], 0.01, [0.0])
    with pytest.raises(ValueError):
        most_on_time([0.0], 0.01, [0.0, 0.0])


def test_a_long_trace_is_quick_and_bounded_by_its_length() -> None:
    rng = np.random.default_rng(0)
    arrivals = np.cumsum(rng.exponential(1 / 900, 3000))  # above the engine's 800/s
    answered = most_on_time(arrivals, 0.024, batch_seconds(0.00485, 0.00027, 2, 16))
    assert 0.7 * 3000 < answered < 3000
