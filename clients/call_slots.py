"""Calls over a server's per-connection stream limit wait in the client.

A gRPC server advertises how many calls one HTTP/2 connection may carry at
once (inferd: 256). grpc core queues calls over it, but a server with
overload protection (grpc core's default; inferd's
``refuse_unreleased_streams``, off by default) keeps counting a finished call
until it has released it, while the client already sees the slot free: calls
sent in that window are refused with RST_STREAM REFUSED_STREAM, which the
caller gets as UNAVAILABLE. The clients therefore keep their own count below
the server's limit (``max_concurrent_calls``) and send a refused call again:
a refused stream was never read by the server, so sending it again is safe.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc

from inferd.clients.errors import InferenceServerError

T = TypeVar("T")

#: Below inferd's default of 256 streams per connection, with room for the
#: calls the server has answered but not yet released.
DEFAULT_MAX_CONCURRENT_CALLS = 192
#: Times a call refused with REFUSED_STREAM is sent again.
REFUSED_RETRIES = 5
#: Pause before sending a refused call again, times the attempt number.
REFUSED_BACKOFF_S = 0.005


def refused_stream(error: grpc.RpcError) -> bool:
    """The server refused the call's stream before reading it (HTTP/2
    REFUSED_STREAM, error code 7): sending it again is safe."""
    code = getattr(error, "code", None)
    details = getattr(error, "details", None)
    if not callable(code) or code() != grpc.StatusCode.UNAVAILABLE or not callable(details):
        return False
    return "RST_STREAM with error code 7" in (details() or "")


def _no_slot(timeout: float | None) -> InferenceServerError:
    return InferenceServerError(
        grpc.StatusCode.DEADLINE_EXCEEDED,
        f"no call slot free within the {timeout} s timeout (max_concurrent_calls reached)",
    )


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


class CallSlots:
    """At most ``limit`` calls at once from one synchronous client (None: no limit)."""

    def __init__(self, limit: int | None) -> None:
        if limit is not None and limit < 1:
            raise ValueError(f"max_concurrent_calls must be at least 1 or None, not {limit}")
        self._slots = threading.BoundedSemaphore(limit) if limit else None

    def acquire(self, timeout: float | None) -> None:
        """Take a slot, waiting up to ``timeout`` seconds (None: for ever)."""
        if self._slots is not None and not self._slots.acquire(timeout=timeout):
            raise _no_slot(timeout)

    def release(self) -> None:
        if self._slots is not None:
            self._slots.release()

    def call(self, send: Callable[[float | None], T], timeout: float | None) -> T:
        """``send(timeout)`` in a slot; the wait for the slot counts against
        ``timeout``, and a refused stream is sent again."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self.acquire(timeout)
        try:
            for attempt in range(1, REFUSED_RETRIES + 1):
                try:
                    return send(_remaining(deadline))
                except grpc.RpcError as err:
                    if not refused_stream(err):
                        raise
                time.sleep(REFUSED_BACKOFF_S * attempt)
            return send(_remaining(deadline))
        finally:
            self.release()


class AsyncCallSlots:
    """``CallSlots`` for one event loop's asyncio client."""

    def __init__(self, limit: int | None) -> None:
        if limit is not None and limit < 1:
            raise ValueError(f"max_concurrent_calls must be at least 1 or None, not {limit}")
        self._slots = asyncio.Semaphore(limit) if limit else None

    async def acquire(self, timeout: float | None) -> None:
        slots = self._slots
        if slots is None:
            return
        if not slots.locked():
            await slots.acquire()  # returns at once: a slot is free
            return
        try:
            await asyncio.wait_for(slots.acquire(), timeout)
        except TimeoutError:
            raise _no_slot(timeout) from None

    def release(self) -> None:
        if self._slots is not None:
            self._slots.release()

    async def call(self, send: Callable[[float | None], Awaitable[T]], timeout: float | None) -> T:
        deadline = None if timeout is None else time.monotonic() + timeout
        await self.acquire(timeout)
        try:
            for attempt in range(1, REFUSED_RETRIES + 1):
                try:
                    return await send(_remaining(deadline))
                except grpc.RpcError as err:
                    if not refused_stream(err):
                        raise
                await asyncio.sleep(REFUSED_BACKOFF_S * attempt)
            return await send(_remaining(deadline))
        finally:
            self.release()
