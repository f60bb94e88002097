"""A server-wide budget of request-message bytes held by calls in flight.

Both front ends charge it. gRPC receives a whole message before any of our
code sees its size, so for gRPC the budget acts at the two points grpc.aio
offers: the request deserializer (``grpc.malformed`` registers it) counts a
unary message's bytes before parsing it, and a message that would take the
calls in flight over the budget is not parsed: the call answers
RESOURCE_EXHAUSTED and its bytes are freed at once. HTTP charges an inference
body from its Content-Length before reading it (``http.server``; a chunked
body once read), and answers 429, RESOURCE_EXHAUSTED's HTTP status. While the
budget is full, new calls are refused before their message is read
(``admission_limits``). What it cannot bound: gRPC messages that arrive
together while the budget has room are all received before the first is
counted (the transport's buffers, not ours). Request streams have their own
bound per stream (``grpc.stream_budget``).
"""

from __future__ import annotations

import asyncio
import functools


class OverBudget:
    """Stands for a request refused by the bytes budget (never parsed)."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


class RequestBytes:
    """Bytes of request messages held by calls in flight, against ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self.reason = (
            f"the server holds its limit of {limit} bytes of requests in flight "
            "(--max-inflight-request-bytes); retry later"
        )
        #: What the deserializer returns for a refused message.
        self.refusal = OverBudget(self.reason)

    @property
    def full(self) -> bool:
        return self.held >= self.limit

    def hold(self, size: int) -> bool:
        """Count ``size`` bytes until ``release``; False (not counted) if that
        would go over. One message always fits an idle server."""
        if self.held and self.held + size > self.limit:
            return False
        self.held += size
        return True

    def release(self, size: int, _task: object = None) -> None:
        self.held -= size

    def take(self, size: int) -> bool:
        """``hold`` for the calling task: released when the task ends."""
        if self.held and self.held + size > self.limit:
            return False
        task = asyncio.current_task()
        if task is not None:
            self.held += size
            task.add_done_callback(functools.partial(self.release, size))
        return True
