"""The event loop's part of monitoring, one per model version: a random
draw per answered request, the feature age, and the batch time for costs.
No work over tensor elements happens here."""

from __future__ import annotations

import random
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import numpy as np

from inferd.server.monitoring.freshness import PARAMETER

if TYPE_CHECKING:
    from inferd.server.request import InferRequest

#: One sampled answer: inputs, outputs, rows.
Sample = tuple[dict[str, np.ndarray], dict[str, np.ndarray], int]


class VersionMonitor:
    """Loop-side state of one version; the monitoring thread reads it."""

    __slots__ = (
        "__weakref__",
        "_age",
        "_dropped",
        "_queue_max",
        "_random",
        "device",
        "engine_s",
        "model",
        "pending",
        "rate",
        "requests",
        "tracker",
        "version",
    )

    def __init__(
        self,
        model: str,
        version: str,
        device: str,
        *,
        rate: float,
        queue_max: int,
        age: Any,
        dropped: Any,
    ) -> None:
        self.model = model
        self.version = version
        #: Where the engine runs: "cpu" or "gpu".
        self.device = device
        self.rate = rate
        self.pending: deque[Sample] = deque()
        self._random = random.random
        self._age = age
        self._dropped = dropped
        self._queue_max = queue_max
        #: Engine seconds and answered requests since load (read by the thread).
        self.engine_s = 0.0
        self.requests = 0
        #: The thread's state for this version (``tracker.VersionTracker``).
        self.tracker: Any = None

    def answer(self, request: InferRequest, outputs: dict[str, np.ndarray]) -> None:
        self.requests += 1
        stamp = request.parameters.get(PARAMETER)
        if stamp is not None:  # checked by the data plane: a non-negative number
            self._age.observe(max(0.0, time.time() - float(stamp)))
        if self._random() < self.rate:
            if len(self.pending) >= self._queue_max:
                self._dropped.inc()
                return
            self.pending.append((request.inputs, outputs, request.rows))

    def executed(self, engine_s: float) -> None:
        self.engine_s += engine_s
