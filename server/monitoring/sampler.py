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

#: One sampled answer: inputs, outputs, rows, bytes held.
Sample = tuple[dict[str, np.ndarray], dict[str, np.ndarray], int, int]


class VersionMonitor:
    """Loop-side state of one version; the monitoring thread reads it."""

    __slots__ = (
        "__weakref__",
        "_age",
        "_dropped",
        "_queue_bytes",
        "_queue_max",
        "_random",
        "appended_bytes",
        "device",
        "drained_bytes",
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
        queue_bytes: int = 64 << 20,
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
        self._queue_bytes = queue_bytes
        #: Bytes of sampled tensors queued (written by the loop) and taken
        #: (written by the thread): one writer each, so no update is lost.
        self.appended_bytes = 0
        self.drained_bytes = 0
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
            held = self.appended_bytes - self.drained_bytes
            if len(self.pending) >= self._queue_max or held >= self._queue_bytes:
                self._dropped.inc()
                return
            size = sum(a.nbytes for a in request.inputs.values())
            size += sum(a.nbytes for a in outputs.values())
            self.appended_bytes += size
            self.pending.append((request.inputs, outputs, request.rows, size))

    def executed(self, engine_s: float) -> None:
        self.engine_s += engine_s
