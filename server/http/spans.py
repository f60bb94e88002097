"""The server span of an HTTP inference request: continues the caller's W3C
``traceparent``, follows OpenTelemetry's HTTP server conventions, and is the
parent of the data plane's phase and batch spans (as gRPC's RPC span is)."""

from __future__ import annotations

from opentelemetry import propagate
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from inferd.server.telemetry.tracing import Tracing

INFER_ROUTE = "/v2/models/{model}[/versions/{version}]/infer"


def start_infer_span(tracing: Tracing, headers: dict[str, str]) -> Span:
    parent = propagate.extract({k.lower(): v for k, v in headers.items()})
    return tracing.tracer.start_span(
        f"POST {INFER_ROUTE}",
        context=parent,
        kind=SpanKind.SERVER,
        attributes={"http.request.method": "POST", "http.route": INFER_ROUTE},
    )


def end_infer_span(span: Span, status: int, message: str = "") -> None:
    span.set_attribute("http.response.status_code", status)
    if status >= 500:  # the server's fault; a 4xx is the caller's (HTTP conventions)
        span.set_status(Status(StatusCode.ERROR, message or str(status)))
    span.end()
