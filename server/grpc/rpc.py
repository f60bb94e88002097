"""The one place domain errors become gRPC statuses, and the RPC's server span."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from opentelemetry import trace
from opentelemetry.trace import Span

from inferd.server.errors import (
    InferdError,
    InvalidArgument,
    ResourceExhausted,
    Status,
    status_of,
)
from inferd.server.grpc.malformed import MALFORMED, REASON, note_malformed
from inferd.server.request_bytes import OverBudget
from inferd.server.telemetry.tracing import Tracing

log = logging.getLogger("inferd.servicer")

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Handler = Callable[[Any, Req, grpc.aio.ServicerContext[Any, Any]], Awaitable[Resp]]


#: Each domain status as gRPC's (the same names).
GRPC_CODES: dict[Status, grpc.StatusCode] = {s: grpc.StatusCode[s.name] for s in Status}


def grpc_status(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The gRPC status and message to send for ``exc`` (``status_of``)."""
    status, message = status_of(exc)
    return GRPC_CODES[status], message


def code_of(exc: BaseException) -> grpc.StatusCode:
    """The status an exception ends an RPC with."""
    if isinstance(exc, InferdError):
        return GRPC_CODES[exc.code]
    if isinstance(exc, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.INTERNAL


def rpc(fn: Handler[Req, Resp]) -> Handler[Req, Resp]:
    """Map domain errors to their status and anything else to a bare INTERNAL
    (no exception's text reaches a caller); with tracing on, run the handler
    inside the RPC's server span."""
    method = fn.__name__

    async def call(
        self: Any, request: Req, context: grpc.aio.ServicerContext[Any, Any], span: Span | None
    ) -> Resp:
        code, message = grpc.StatusCode.OK, ""
        try:
            if request is MALFORMED:  # bytes that did not parse (server.grpc.malformed)
                note_malformed(method)
                raise InvalidArgument(REASON)
            if isinstance(request, OverBudget):  # not parsed (server.request_bytes)
                raise ResourceExhausted(request.reason)
            return await fn(self, request, context)
        except InferdError as exc:
            code, message = GRPC_CODES[exc.code], exc.message
            await context.abort(code, message)
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        except grpc.aio.AbortError:  # the handler aborted by itself
            set_code = context.code()
            code = set_code if isinstance(set_code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN
            raise
        except Exception:
            log.exception("unexpected error in %s", method, extra={"event": "error"})
            code, message = grpc_status(Exception())
            await context.abort(code, message)
        finally:
            if span is not None:
                Tracing.end_rpc(span, code, message)
        raise AssertionError("unreachable")  # abort always raises

    @functools.wraps(fn)
    async def wrapper(self: Any, request: Req, context: grpc.aio.ServicerContext[Any, Any]) -> Resp:
        # Other services share this decorator (the admin servicer): only the
        # inference servicer traces.
        tracing: Tracing | None = getattr(self, "tracing", None)
        if tracing is None:
            return await call(self, request, context, None)
        span = tracing.start_rpc(method, context)
        with trace.use_span(span, record_exception=False, set_status_on_exception=False):
            return await call(self, request, context, span)

    wrapper.checks_malformed = True  # type: ignore[attr-defined]
    return wrapper
