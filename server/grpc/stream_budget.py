"""What one ``ModelStreamInfer`` call may hold: requests read but not yet
answered plus answers not yet written, by count and by bytes.

The stream's reader takes a slot for every message it reads and, once the
budget is full, waits before reading the next one: gRPC then stops
receiving on that stream and HTTP/2 flow control pushes back on the sender.
A caller that sends without reading its answers can therefore never make
the server hold more than the budget. Below the bound the cost is a few
integer updates per request; the reader only awaits when the budget is full.
"""

from __future__ import annotations

import asyncio

import numpy as np

#: Enough requests in flight to fill a batch of every demo model twice over.
DEFAULT_STREAM_MAX_INFLIGHT = 128
#: Half the default largest message: one full-size request still runs.
DEFAULT_STREAM_MAX_BUFFERED_BYTES = 32 << 20


class StreamBudget:
    """Counters for one stream; all calls come from the stream's event loop."""

    __slots__ = ("_room", "held", "held_bytes", "max_bytes", "max_held", "peak_bytes", "peak_held")

    def __init__(self, max_held: int, max_bytes: int) -> None:
        self.max_held = max_held
        self.max_bytes = max_bytes
        #: Requests read and not answered, plus answers not yet written.
        self.held = 0
        #: Their bytes: decoded inputs while a request runs, outputs once answered.
        self.held_bytes = 0
        #: The most this stream held at once (for metrics and tests).
        self.peak_held = 0
        self.peak_bytes = 0
        self._room: asyncio.Event | None = None

    def full(self) -> bool:
        return self.held >= self.max_held or self.held_bytes >= self.max_bytes

    def take(self) -> None:
        """A request was read."""
        self.held += 1
        if self.held > self.peak_held:
            self.peak_held = self.held

    def charge(self, nbytes: int) -> None:
        """What the stream holds grew (or shrank, when negative) by ``nbytes``."""
        self.held_bytes += nbytes
        if self.held_bytes > self.peak_bytes:
            self.peak_bytes = self.held_bytes

    def release(self, nbytes: int) -> None:
        """An answer of ``nbytes`` was written: its slot and bytes are free."""
        self.held -= 1
        self.held_bytes -= nbytes
        if self._room is not None and not self.full():
            self._room.set()
            self._room = None

    async def wait_for_room(self) -> None:
        """Return once the budget is below its bounds (at once if it is)."""
        while self.full():
            if self._room is None:
                self._room = asyncio.Event()
            await self._room.wait()


def arrays_bytes(arrays: dict[str, np.ndarray]) -> int:
    """Bytes of a request's inputs or an answer's outputs (no copy made; a
    BYTES tensor counts its object pointers, its strings being bounded by
    the message size)."""
    return sum(a.nbytes for a in arrays.values())
