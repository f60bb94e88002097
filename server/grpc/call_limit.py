"""The server's limit on concurrent RPCs, applied before a request is read.

gRPC's own ``maximum_concurrent_rpcs`` counts every call, so open
Health/Watch streams (which need no credentials) took the slots of inference
and of Health/Check, and it knows nothing of the HTTP port. This check
takes its slots from the server's ``AdmissionLimits`` (``admission_limits``),
shared with the HTTP front end and leaving the same calls uncounted. It runs
on the call's own task before gRPC reads the request, so a refusal costs no
body read and no parse; the slot is freed when that task ends, whatever way
the call ends. While the request-bytes budget (``request_bytes``) is full,
calls are refused here too.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from inferd.server.admission_limits import UNCOUNTED, AdmissionLimits


def refusal(code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler[Any, Any]:
    """A handler that answers ``code`` without reading the request: declared
    request-streaming, gRPC reads nothing until the handler asks."""

    async def refuse(requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await context.abort(code, message)

    return grpc.stream_unary_rpc_method_handler(refuse)


class CallLimit:
    """Counts each call (but ``UNCOUNTED`` ones) in ``limits`` for as long as
    its task runs; a call ``limits`` refuses gets RESOURCE_EXHAUSTED. Run by
    the server's one interceptor (``call_gate.CallGate``) after the auth decision."""

    def __init__(self, limits: AdmissionLimits) -> None:
        self.limits = limits

    def check(self, handler: Any, handler_call_details: grpc.HandlerCallDetails) -> Any:
        """``handler``, its call counted for as long as its task runs, or a
        RESOURCE_EXHAUSTED refusal (on the call's own task)."""
        if handler_call_details.method in UNCOUNTED:
            return handler
        task = asyncio.current_task()
        if task is None:  # no call task to tie a slot to: not counted
            return handler
        limits = self.limits
        refused = limits.admit(streaming=handler.request_streaming)
        if refused is not None:
            return refusal(grpc.StatusCode.RESOURCE_EXHAUSTED, refused)
        task.add_done_callback(limits.release)  # the call's task ends when the call does
        return handler
