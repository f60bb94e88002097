"""The server's limit on concurrent RPCs, applied before a request is read.

gRPC's own ``maximum_concurrent_rpcs`` counts every call, so open
Health/Watch streams (which need no credentials) took the slots of inference
and of Health/Check. This interceptor counts the calls that do work:
Health/Check (answered from memory, what liveness probes call) and the
long-lived health and reflection streams (``grpc.watch_budget``, their own
budget) are not counted. It runs on the call's own task before gRPC reads
the request, so a refusal costs no body read and no parse; the slot is freed
when that task ends, whatever way the call ends. While the request-bytes
budget (``grpc.request_bytes``) is full, calls are refused here too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

from inferd.server.grpc.request_bytes import RequestBytes

#: Not counted: answered from memory, or capped by ``grpc.watch_budget``.
UNCOUNTED = frozenset(
    {
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    }
)

if TYPE_CHECKING:  # grpc-stubs makes it generic; at run time it is not
    _ServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    _ServerInterceptor = grpc.aio.ServerInterceptor

Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[Any]]


def refusal(code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler[Any, Any]:
    """A handler that answers ``code`` without reading the request: declared
    request-streaming, gRPC reads nothing until the handler asks."""

    async def refuse(requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await context.abort(code, message)

    return grpc.stream_unary_rpc_method_handler(refuse)


class CallLimit(_ServerInterceptor):
    """At most ``max_calls`` counted calls at once (None: no limit), and none
    while the request-bytes budget is full; more get RESOURCE_EXHAUSTED."""

    def __init__(self, max_calls: int | None, request_bytes: RequestBytes | None = None) -> None:
        self.max_calls = max_calls
        self.request_bytes = request_bytes
        self.active = 0
        self._message = f"Concurrent RPC limit of {max_calls} reached; retry later"

    def _finished(self, _task: object) -> None:
        self.active -= 1

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method in UNCOUNTED:
            return handler
        if self.max_calls is not None and self.active >= self.max_calls:
            return refusal(grpc.StatusCode.RESOURCE_EXHAUSTED, self._message)
        if (
            self.request_bytes is not None
            and self.request_bytes.full
            and not handler.request_streaming  # a stream has its own bound
        ):
            return refusal(grpc.StatusCode.RESOURCE_EXHAUSTED, self.request_bytes.reason)
        task = asyncio.current_task()
        if task is not None:  # the call's task: it ends when the call does
            self.active += 1
            task.add_done_callback(self._finished)
        return handler
