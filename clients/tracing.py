"""The caller's OpenTelemetry trace context, sent with each call.

Both clients build every call's metadata through ``call_metadata``: when the
calling code runs inside a span, the globally configured propagator (W3C
``traceparent``/``tracestate`` and ``baggage`` unless ``OTEL_PROPAGATORS``
says otherwise) writes that span's context into the metadata, so the server's
span joins the caller's trace with nothing passed by hand.

Merging headers costs less than a gRPC client interceptor, which wraps every
call (and, under ``grpc.aio``, moves it onto a slower code path) even when
there is nothing to send. Without a span the cost is one context-variable read;
without the ``opentelemetry`` package, none.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from inferd.clients._codec import Metadata, merge_metadata

_inject: Callable[[dict[str, str]], None] | None
_current_span: Callable[[], Any] | None
try:
    from opentelemetry.propagate import inject as _inject
    from opentelemetry.trace import get_current_span as _current_span
except ImportError:  # the client works without OpenTelemetry: nothing to propagate
    _inject = _current_span = None

#: The W3C trace context headers: sent as a pair, so one set by the caller
#: keeps the other from a different trace out.
_TRACE_CONTEXT = frozenset({"traceparent", "tracestate"})


def call_metadata(
    default: tuple[tuple[str, str | bytes], ...], per_call: Metadata
) -> tuple[tuple[str, str | bytes], ...] | None:
    """``merge_metadata(default, per_call)`` plus the active span's trace
    context; metadata the caller set wins over what would be propagated."""
    merged = merge_metadata(default, per_call)
    if _current_span is None or _inject is None:
        return merged
    if not _current_span().get_span_context().is_valid:
        return merged
    carrier: dict[str, str] = {}
    _inject(carrier)
    if not merged:
        return tuple(carrier.items()) or None
    taken = {key for key, _ in merged}
    if taken & _TRACE_CONTEXT:
        taken |= _TRACE_CONTEXT
    return merged + tuple(item for item in carrier.items() if item[0] not in taken)
