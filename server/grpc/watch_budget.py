"""Long-lived health and reflection streams have a budget of their own.

``Health/Watch`` and server reflection need no credentials and stay open for
as long as the caller likes. Counted with inference against gRPC's
``maximum_concurrent_rpcs``, a few hundred of them refused every ModelInfer
and every Health/Check. The server's RPC limit (``grpc.call_limit``) does not
count them; here they are capped per connection and in all. Over a cap a new
stream gets RESOURCE_EXHAUSTED at once.
"""

from __future__ import annotations

import inspect
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from inferd.server.grpc.malformed import register, service_handlers

#: Defaults: a client-side health checker holds one Watch per connection and
#: service; grpcurl holds one reflection stream.
DEFAULT_MAX_WATCH_STREAMS = 128
DEFAULT_MAX_WATCH_STREAMS_PER_CONNECTION = 8


class WatchBudget:
    """Counts open watch streams per connection (the peer's address) and in all."""

    def __init__(self, total: int, per_connection: int) -> None:
        self.total = total
        self.per_connection = per_connection
        self.open = 0
        self._by_peer: Counter[str] = Counter()

    def _refusal(self, peer: str) -> str | None:
        if self.open >= self.total:
            return f"too many health/reflection streams on the server (limit {self.total})"
        if self._by_peer[peer] >= self.per_connection:
            return (
                "too many health/reflection streams on this connection "
                f"(limit {self.per_connection})"
            )
        return None

    def _enter(self, peer: str) -> None:
        self.open += 1
        self._by_peer[peer] += 1

    def _leave(self, peer: str) -> None:
        self.open -= 1
        self._by_peer[peer] -= 1
        if self._by_peer[peer] <= 0:
            del self._by_peer[peer]

    def guard(self, behavior: Callable[..., Any]) -> Callable[..., Any]:
        """``behavior`` (a streaming handler) counted against the budget; gRPC
        tells coroutines (reader/writer API) from generators, so both are kept."""
        if inspect.isasyncgenfunction(behavior):

            async def generator(request: Any, context: Any) -> AsyncIterator[Any]:
                peer = context.peer()
                refusal = self._refusal(peer)
                if refusal is not None:
                    await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, refusal)
                self._enter(peer)
                try:
                    async for reply in behavior(request, context):
                        yield reply
                finally:
                    self._leave(peer)

            return generator

        async def coroutine(request: Any, context: Any) -> Any:
            peer = context.peer()
            refusal = self._refusal(peer)
            if refusal is not None:
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, refusal)
            self._enter(peer)
            try:
                return await behavior(request, context)
            finally:
                self._leave(peer)

        return coroutine


def add_budgeted(
    add_to_server: Callable[[Any, Any], None], servicer: Any, server: Any, budget: WatchBudget
) -> None:
    """``add_to_server(servicer, server)`` (a generated function), with every
    streaming method counted against ``budget``."""
    service, handlers = service_handlers(add_to_server, servicer)
    register(server, service, {name: _budgeted(h, budget) for name, h in handlers.items()})


def _budgeted(handler: Any, budget: WatchBudget) -> Any:
    options = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(budget.guard(handler.unary_stream), **options)
    if handler.stream_stream is not None:
        return grpc.stream_stream_rpc_method_handler(budget.guard(handler.stream_stream), **options)
    return handler
