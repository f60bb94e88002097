"""A fixed-size ring of a tensor's last sampled rows, with their times."""

from __future__ import annotations

import numpy as np


class Ring:
    __slots__ = ("_filled", "_next", "_rows", "_times")

    def __init__(self, capacity: int, features: int) -> None:
        self._rows = np.full((capacity, features), np.nan)
        self._times = np.full(capacity, -np.inf)
        self._next = 0
        self._filled = 0

    @property
    def capacity(self) -> int:
        return int(self._rows.shape[0])

    @property
    def features(self) -> int:
        return int(self._rows.shape[1])

    def add(self, matrix: np.ndarray, now: float) -> None:
        """Append ``matrix`` rows (the newest win when it is larger than the ring)."""
        capacity = self.capacity
        if matrix.shape[0] >= capacity:
            self._rows[:] = matrix[-capacity:]
            self._times[:] = now
            self._next, self._filled = 0, capacity
            return
        index = (self._next + np.arange(matrix.shape[0])) % capacity
        self._rows[index] = matrix
        self._times[index] = now
        self._next = int((self._next + matrix.shape[0]) % capacity)
        self._filled = min(capacity, self._filled + matrix.shape[0])

    def window(self, since: float) -> np.ndarray:
        """The rows added at ``since`` or later."""
        return self._rows[self._times >= since]
