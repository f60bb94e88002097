"""Run a blocking iterator on its own thread, ``depth`` items ahead of the
event loop that consumes them: reading and converting the next parts
overlaps scoring and writing the current ones."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Generic, TypeVar, cast

T = TypeVar("T")

_END = object()


class Prefetch(Generic[T]):
    def __init__(self, source: Iterator[T], depth: int = 2) -> None:
        self._source = source
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fill, name="inferd-batch-reader", daemon=True)
        self._thread.start()

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _fill(self) -> None:
        try:
            for item in self._source:
                if not self._put(item):
                    return
        except BaseException as exc:  # handed to the consumer, raised there
            self._put(exc)
            return
        self._put(_END)

    async def __aiter__(self) -> AsyncIterator[T]:
        while True:
            item = await asyncio.to_thread(self._queue.get)
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield cast(T, item)

    def close(self) -> None:
        """Stop the thread (it ends at its next item)."""
        self._stop.set()
        # A consumer cancelled while waiting leaves a worker thread in get(): wake it.
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(_END)
        self._thread.join(timeout=5)
