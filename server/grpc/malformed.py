"""Request bytes that do not parse: INVALID_ARGUMENT, not a traceback.

gRPC parses a request before any handler runs; a parse error there becomes
UNKNOWN ("Unexpected <class 'DecodeError'>") and an ERROR traceback in the
log, per request, reachable by anyone who can open a connection. The
services are registered here with deserializers that hand such bytes to the
handler as ``Malformed`` instead, and the handler answers INVALID_ARGUMENT
with one line; the log gets at most one warning per ``WARN_EVERY_S``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from inferd.server.request_bytes import OverBudget, RequestBytes

log = logging.getLogger("inferd.servicer")

#: At most one log line per this many seconds about malformed requests.
WARN_EVERY_S = 10.0
REASON = "the request message does not parse (corrupt bytes or a string that is not UTF-8)"


class Malformed:
    """Stands for a request whose bytes did not parse."""

    __slots__ = ()


MALFORMED = Malformed()


class _MalformedInStream(Exception):
    """Ends a request stream at a message that did not parse. Raised where the
    stream is read (the servicer may read it on a task of its own) and turned
    into INVALID_ARGUMENT by the handler's own task: aborting the call from the
    reading task raced the handler's writes and could leave the call hanging."""


class _Warnings:
    """One warning per interval, with the count since the last one."""

    def __init__(self) -> None:
        self.next_at = 0.0
        self.count = 0

    def note(self, method: str) -> None:
        self.count += 1
        now = time.monotonic()
        if now >= self.next_at:
            log.warning(
                "%d malformed request message(s) refused, the last for %s",
                self.count,
                method,
                extra={"event": "malformed_request"},
            )
            self.count = 0
            self.next_at = now + WARN_EVERY_S


_WARNINGS = _Warnings()


def note_malformed(method: str) -> None:
    """Count a refused malformed request (logged at most once per interval)."""
    _WARNINGS.note(method)


def _tolerant(
    parse: Callable[[bytes], Any], budget: RequestBytes | None = None
) -> Callable[[bytes], Any]:
    if budget is not None:
        # A unary request: its bytes count against the server's budget, and
        # one that would go over is not parsed (``server.request_bytes``).
        def counted(data: bytes) -> Any:
            if not budget.take(len(data)):
                return budget.refusal
            try:
                return parse(data)
            except DecodeError:
                return MALFORMED

        return counted

    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except DecodeError:
            return MALFORMED

    return deserialize


async def _refuse(
    method: str, context: grpc.aio.ServicerContext[Any, Any], request: Any = MALFORMED
) -> None:
    if isinstance(request, OverBudget):
        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, request.reason)
    _WARNINGS.note(method)
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, REASON)


def _wrap(method: str, handler: Any, budget: RequestBytes | None = None) -> Any:
    # Any: grpc's type stubs describe the synchronous server's handlers.
    unary_request = handler.unary_unary is not None or handler.unary_stream is not None
    deserializer = _tolerant(handler.request_deserializer, budget if unary_request else None)
    serializer = handler.response_serializer
    if handler.unary_unary is not None:
        unary: Any = handler.unary_unary
        if getattr(unary, "checks_malformed", False):
            # The ``rpc`` decorator refuses MALFORMED itself: no extra coroutine
            # layer on the unary hot path, only the tolerant deserializer.
            return grpc.unary_unary_rpc_method_handler(
                unary, request_deserializer=deserializer, response_serializer=serializer
            )

        async def checked(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            if isinstance(request, Malformed | OverBudget):
                await _refuse(method, context, request)
            return await unary(request, context)

        return grpc.unary_unary_rpc_method_handler(
            checked, request_deserializer=deserializer, response_serializer=serializer
        )
    if handler.unary_stream is not None:
        server_streaming: Any = handler.unary_stream

        async def checked_out(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            if isinstance(request, Malformed | OverBudget):
                await _refuse(method, context, request)
            async for reply in server_streaming(request, context):
                yield reply

        return grpc.unary_stream_rpc_method_handler(
            checked_out, request_deserializer=deserializer, response_serializer=serializer
        )
    streaming: Any = handler.stream_stream or handler.stream_unary
    if handler.stream_stream is not None and getattr(streaming, "checks_malformed", False):
        # The handler reads the stream itself and refuses MALFORMED once the
        # messages read before it are answered: no generator layers per message.
        return grpc.stream_stream_rpc_method_handler(
            streaming, request_deserializer=deserializer, response_serializer=serializer
        )

    async def checked_in(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
        async for request in requests:
            if request is MALFORMED:
                raise _MalformedInStream
            yield request

    if handler.stream_stream is not None:
        # gRPC tells generators from coroutines by the function: an async
        # generator function here, a coroutine function below.
        async def checked_streams(
            requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            try:
                async for reply in streaming(checked_in(requests), context):
                    yield reply
            except _MalformedInStream:
                await _refuse(method, context)

        return grpc.stream_stream_rpc_method_handler(
            checked_streams, request_deserializer=deserializer, response_serializer=serializer
        )

    async def checked_stream(
        requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]
    ) -> Any:
        try:
            return await streaming(checked_in(requests), context)
        except _MalformedInStream:
            await _refuse(method, context)

    return grpc.stream_unary_rpc_method_handler(
        checked_stream, request_deserializer=deserializer, response_serializer=serializer
    )


class _Capture:
    """Stands in for the server while a generated ``add_*_to_server`` runs."""

    def __init__(self) -> None:
        self.service = ""
        self.handlers: dict[str, Any] = {}

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        pass

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        self.service, self.handlers = service, handlers


def service_handlers(
    add_to_server: Callable[[Any, Any], None], servicer: Any
) -> tuple[str, dict[str, Any]]:
    """The service name and method handlers a generated ``add_*_to_server`` registers."""
    capture = _Capture()
    add_to_server(servicer, capture)
    return capture.service, capture.handlers


#: The methods registered with gRPC by name; every other one is found through
#: the generic handler, with the same answer. grpc.aio's server keeps a pending
#: task per registered method and waits on all of them for each call it accepts,
#: so every registered method costs every call (docs/experiments/registered-methods.md).
REGISTERED_METHODS = frozenset(
    {
        "/inference.GRPCInferenceService/ModelInfer",
        "/inference.GRPCInferenceService/ModelStreamInfer",
    }
)


def register(server: Any, service: str, handlers: dict[str, Any]) -> None:
    """Register ``handlers`` as the generated ``add_*_to_server`` would, by
    name only those in ``REGISTERED_METHODS``."""
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
    named = {n: h for n, h in handlers.items() if f"/{service}/{n}" in REGISTERED_METHODS}
    if named:
        server.add_registered_method_handlers(service, named)


def add_servicer(
    add_to_server: Callable[[Any, Any], None],
    servicer: Any,
    server: Any,
    budget: RequestBytes | None = None,
) -> None:
    """``add_to_server(servicer, server)`` (a generated function), with every
    method answering INVALID_ARGUMENT to a request that does not parse, and
    unary requests counted against ``budget``."""
    service, handlers = service_handlers(add_to_server, servicer)
    register(server, service, {name: _wrap(name, h, budget) for name, h in handlers.items()})
