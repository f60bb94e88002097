"""The scheduler seam: the only way a request reaches an engine.

A scheduler admits requests for one model version, decides when and with
whom each runs, and runs the engine in its own executor threads so the event
loop never blocks. ``inferd.server.scheduler.dispatch.BatchingScheduler``
implements it.
"""

from __future__ import annotations

import abc

import numpy as np

from inferd.server.errors import Unavailable
from inferd.server.request import InferRequest


class Scheduler(abc.ABC):
    """Admits requests for one model version and returns their outputs."""

    @abc.abstractmethod
    async def submit(self, request: InferRequest) -> dict[str, np.ndarray]:
        """Outputs for ``request`` (only those it asked for, all if none).

        Raises a ``server.errors`` error when the request is refused, expires
        or its execution fails. Cancelling the awaiting task withdraws a
        request that has not started; one already running finishes and its
        result is dropped."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Refuse new requests, let admitted ones finish, release threads."""

    @property
    @abc.abstractmethod
    def pending(self) -> int:
        """Requests admitted and not yet answered."""

    # Health, for schedulers that have an engine to lose (``scheduler.health``);
    # one without (an ensemble's) is always healthy.

    @property
    def healthy(self) -> bool:
        return True

    @property
    def unhealthy_reason(self) -> str:
        return ""

    def unhealthy_error(self) -> Unavailable:
        return Unavailable("model is not healthy")

    @property
    def hung(self) -> int:
        """Engine calls past their timeout that have not returned yet."""
        return 0
