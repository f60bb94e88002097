"""The arrival traces the policy benchmarks offer, by name, at a mean rate."""

from __future__ import annotations

from benchmarks.loadgen import Arrival, Bursty, Poisson, Step

#: The shifting trace's phases as multiples of its mean rate: at 0.6x of
#: capacity it runs 0.2x -> 0.8x -> 0.3x -> 1.1x, each a quarter of the run.
SHIFT = (0.2 / 0.6, 0.8 / 0.6, 0.3 / 0.6, 1.1 / 0.6)
TRACES = ("bursty", "poisson", "shifting")


def make_arrival(kind: str, rate: float, duration_s: float) -> Arrival:
    """``kind``'s arrivals at a mean of ``rate`` requests/s over ``duration_s``."""
    if kind == "bursty":
        return Bursty(rate)
    if kind == "poisson":
        return Poisson(rate)
    if kind == "shifting":
        return Step(tuple(rate * m for m in SHIFT), duration_s / len(SHIFT))
    raise ValueError(f"unknown trace {kind!r}; one of {TRACES}")
