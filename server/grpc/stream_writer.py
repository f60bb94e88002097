"""Answers of one ``ModelStreamInfer`` call, written as their requests finish.

gRPC accepts one send at a time per call, and a stream's requests finish on
tasks of their own. Each task hands its answer to ``StreamWriter.write``: the
first writes at once, one that finds a write under way leaves its answer to
the task writing, which sends it next. So an answer reaches the wire from the
task that computed it, with no queue hop to another task (and no async
generator layers) in between.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import grpc

from inferd.protos import grpc_service_pb2 as pb
from inferd.server.grpc.stream_budget import StreamBudget


class StreamWriter:
    """Writes a stream's answers one at a time and frees their budget once written."""

    __slots__ = ("_budget", "_context", "_waiting", "_writing")

    def __init__(self, context: grpc.aio.ServicerContext[Any, Any], budget: StreamBudget) -> None:
        self._context = context
        self._budget = budget
        #: Answers (and their bytes) handed over while a write was under way.
        self._waiting: deque[tuple[pb.ModelStreamInferResponse, int]] = deque()
        self._writing = False

    async def write(self, answer: pb.ModelStreamInferResponse, nbytes: int) -> None:
        """Send ``answer`` now, or after the write under way (by the task
        writing it); ``nbytes`` of the budget are freed once it is sent."""
        self._waiting.append((answer, nbytes))
        if self._writing:
            return
        self._writing = True
        try:
            while self._waiting:
                answer, nbytes = self._waiting.popleft()
                await self._context.write(answer)
                self._budget.release(nbytes)
        finally:
            self._writing = False
