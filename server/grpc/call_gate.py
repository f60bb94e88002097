"""Who may call, then how many calls may run, as one gRPC interceptor.

grpc.aio runs every interceptor as two coroutines per call, and in a chain the
inner interceptor's check runs before the outer one's: with the auth and
call-limit interceptors chained, a caller that auth then refused had already
taken a call slot (given back when its refusal ended). Here the auth decision
comes first, a refused caller takes no slot, and the pair costs one layer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

from inferd.server.auth.grpc_interceptor import AuthInterceptor
from inferd.server.grpc.call_limit import CallLimit

if TYPE_CHECKING:  # grpc-stubs makes it generic; at run time it is not
    _ServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    _ServerInterceptor = grpc.aio.ServerInterceptor

Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[Any]]


class CallGate(_ServerInterceptor):
    """``auth`` (None: everything is open) decides each call, then ``limit``
    counts the calls it lets through."""

    def __init__(self, auth: AuthInterceptor | None, limit: CallLimit) -> None:
        self.auth = auth
        self.limit = limit

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        if self.auth is not None:
            handler, refused = self.auth.decide(handler, handler_call_details)
            if refused:
                return handler
        return self.limit.check(handler, handler_call_details)
