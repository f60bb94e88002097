"""How busy the event loop thread is: the share of wall time it spends on CPU.

The event loop thread does the per-request and per-batch work of every model
(gRPC, decoding, planning, answering); with a fast engine it, not the engine,
runs out first, and each batch costs it and an engine thread their wake-ups.
The adaptive planner reads this share to wait for fuller batches while the
loop is the bottleneck (docs/experiments/loop-bound-batching.md). One per
server, shared by its schedulers; read on the loop thread only.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable


class LoopLoad:
    """An exponentially weighted share of wall time the reading thread spent
    on CPU, updated at most every ``SAMPLE_S`` when read."""

    #: Shortest interval a sample covers: shorter ones are mostly noise.
    SAMPLE_S = 0.05
    #: Time constant of the average: about a second of load changes it fully.
    TAU_S = 0.25

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        cpu: Callable[[], float] = time.thread_time,
    ) -> None:
        self._clock = clock
        self._cpu = cpu
        #: When the current sample began (None: not read yet; the first read,
        #: on the loop thread, starts it: the server may be built on another).
        self._at: float | None = None
        self._cpu_at = 0.0
        self._share = 0.0

    def share(self) -> float:
        """The recent share, 0..1, of the reading thread's time spent on CPU."""
        now = self._clock()
        if self._at is None:
            self._at, self._cpu_at = now, self._cpu()
            return self._share
        elapsed = now - self._at
        if elapsed >= self.SAMPLE_S:
            cpu = self._cpu()
            sample = min(1.0, max(0.0, (cpu - self._cpu_at) / elapsed))
            keep = math.exp(-elapsed / self.TAU_S)
            self._share = self._share * keep + sample * (1.0 - keep)
            self._at, self._cpu_at = now, cpu
        return self._share
