"""The arrival traces the policy benchmarks offer, by name, at a mean rate."""

from __future__ import annotations

from benchmarks.loadgen import Arrival, Bursty, Poisson, Step
from benchmarks.scenarios import SHIFT

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
