"""OpenTelemetry traces: a server span per RPC, phases, and batch spans.

Configured by the standard environment variables (read once at start-up):

- ``OTEL_TRACES_EXPORTER``: ``otlp`` (OTLP/gRPC; ``OTEL_EXPORTER_OTLP_*`` set
  the endpoint, headers, TLS), ``console``, ``none``, or a comma-separated
  list. Unset means ``none``: unlike the SDK's default, inferd does not trace
  unless asked, so a server without a collector does not retry exports.
- ``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES``: the resource
  (``service.name`` defaults to ``inferd``).
- ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG``: e.g.
  ``parentbased_traceidratio`` and ``0.01``. Default ``parentbased_always_on``.
- ``OTEL_SPAN_LINK_COUNT_LIMIT`` (default 128): links per batch span.
- ``OTEL_PROPAGATORS`` (default ``tracecontext,baggage``): how the caller's
  trace context is read from the gRPC metadata.
- ``OTEL_SDK_DISABLED=true`` turns tracing off whatever else is set.

The span tree of one ``ModelInfer``::

    inference.GRPCInferenceService/ModelInfer   SERVER, rpc.*, server.* and
    |                                           network.peer.* attributes
    |-- decode
    |-- queue        (arrival -> dispatch; linked to the batch span; outcome,
    |                 deadline slack, the admission's prediction)
    |-- inferd.batch (only under the first sampled request of the batch)
    |   `-- compute  (merge inputs, engine, split outputs: events
    |                 COMPUTE_INPUT_END and COMPUTE_OUTPUT_START, as Triton's)
    `-- encode

Each executed batch has one ``inferd.batch`` span linked to the span of every
request in it (the first ``OTEL_SPAN_LINK_COUNT_LIMIT``; the attribute
``inferd.batch.links_dropped`` counts the rest). It is a child of the first
sampled request's span, so a parent-based sampler keeps it whenever any of
its requests is kept, and each request's ``queue`` span links back to it.

Statuses follow the RPC conventions everywhere: a span is an error only when
its failure would end the RPC with a server-error code (INTERNAL, UNAVAILABLE,
...), so a request span and its children agree (a caller's INVALID_ARGUMENT
leaves both unset).

When tracing is off the server never builds a ``Tracing``: the front ends, data plane and
scheduler test one attribute for None and do no tracer work.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import grpc
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode

from inferd.server.errors import status_of
from inferd.server.observer import Queued
from inferd.server.telemetry.net_attributes import peer_attributes, server_attributes

if TYPE_CHECKING:
    from inferd.server.scheduler.records import BatchRecord

SERVICE = "inference.GRPCInferenceService"
DEFAULT_SERVICE_NAME = "inferd"

#: Server-span status codes that are errors (OpenTelemetry RPC conventions);
#: the others are the caller's doing and leave the status unset.
_SERVER_ERRORS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
_SERVER_ERROR_NAMES = frozenset(code.name for code in _SERVER_ERRORS)
_SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)


def is_server_error(exc: BaseException) -> bool:
    """Whether ``exc`` ends its RPC with a status the RPC conventions count as
    the server's error (cancellation and the caller's mistakes are not)."""
    if not isinstance(exc, Exception):
        return False
    return status_of(exc)[0].name in _SERVER_ERROR_NAMES


def _error_status(exc: BaseException) -> Status:
    return Status(StatusCode.ERROR, status_of(exc)[1])


class TracingConfigError(ValueError):
    """An OTEL_* variable has a value inferd cannot use; the message names it."""


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() == "true"


def exporter_names(environ: dict[str, str] | os._Environ[str] | None = None) -> list[str]:
    """The exporters ``OTEL_TRACES_EXPORTER`` asks for ([] = tracing off)."""
    env = os.environ if environ is None else environ
    if _truthy(env.get("OTEL_SDK_DISABLED")):
        return []
    names = [n.strip().lower() for n in env.get("OTEL_TRACES_EXPORTER", "").split(",")]
    return [n for n in names if n and n != "none"]


def _check_sampler(env: dict[str, str] | os._Environ[str]) -> None:
    name = env.get("OTEL_TRACES_SAMPLER", "").strip().lower()
    if not name:
        return
    if name not in _SAMPLERS:
        raise TracingConfigError(
            f"OTEL_TRACES_SAMPLER={name[:40]!r} is not one of {', '.join(_SAMPLERS)}"
        )
    if name.endswith("traceidratio"):
        arg = env.get("OTEL_TRACES_SAMPLER_ARG", "").strip()
        try:
            ratio = float(arg) if arg else 1.0
        except ValueError:
            ratio = math.nan
        if not 0.0 <= ratio <= 1.0:
            raise TracingConfigError(
                f"OTEL_TRACES_SAMPLER_ARG={arg[:40]!r} must be a ratio between 0 and 1"
            )


def _exporter(name: str, env: dict[str, str] | os._Environ[str]) -> SpanExporter:
    if name == "console":
        return ConsoleSpanExporter()
    if name == "otlp":
        protocol = (
            env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
            or "grpc"
        ).strip()
        if protocol != "grpc":
            raise TracingConfigError(
                f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol[:40]!r}: inferd exports OTLP over grpc"
            )
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    raise TracingConfigError(
        f"OTEL_TRACES_EXPORTER names {name[:40]!r}; inferd offers otlp, console, none"
    )


def resource(version: str) -> Resource:
    """The process's resource: ``OTEL_SERVICE_NAME``/``OTEL_RESOURCE_ATTRIBUTES``
    over inferd's defaults (service.name ``inferd``, service.version); the SDK
    adds a per-process ``service.instance.id``, which tells workers apart."""
    defaults = Resource({"service.name": DEFAULT_SERVICE_NAME, "service.version": version})
    detected = Resource.create()
    name = str(detected.attributes.get("service.name", ""))
    if name.startswith("unknown_service"):  # the SDK's placeholder: nothing was set
        detected = detected.merge(Resource({"service.name": DEFAULT_SERVICE_NAME}))
    return defaults.merge(detected)


def _metadata_carrier(context: Any) -> dict[str, str]:
    carrier: dict[str, str] = {}
    metadata: Iterable[tuple[str, str | bytes]] = context.invocation_metadata() or ()
    for key, value in metadata:
        if isinstance(value, str):
            carrier[key.lower()] = value
    return carrier


class Tracing:
    """A tracer and the span helpers the servicer and scheduler use."""

    def __init__(
        self, provider: TracerProvider, *, max_links: int | None = 128, version: str = ""
    ) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer("inferd", version)
        #: Links per batch span; None means unlimited.
        self.max_links = max_links
        # time.monotonic() -> epoch ns for spans built after the fact.
        self._offset_ns = time.time_ns() - time.monotonic_ns()
        #: server.address/server.port, once ``serve_at`` knows them.
        self._server: dict[str, str | int] = {}
        self._rpc_attributes = {
            method: self._method_attributes(method) for method in ("ModelInfer", "ModelStreamInfer")
        }

    @classmethod
    def from_env(cls, version: str) -> Tracing | None:
        """Tracing as the OTEL_* variables configure it, or None when off.
        Raises ``TracingConfigError`` naming a variable it cannot use."""
        env = os.environ
        names = exporter_names(env)
        if not names:
            return None
        _check_sampler(env)
        exporters = [_exporter(n, env) for n in dict.fromkeys(names)]
        limits = SpanLimits()  # reads OTEL_SPAN_*_LIMIT
        provider = TracerProvider(resource=resource(version), span_limits=limits)
        for exporter in exporters:
            provider.add_span_processor(BatchSpanProcessor(exporter))
        return cls(provider, max_links=limits.max_links, version=version)

    def shutdown(self) -> None:
        """Flush what is buffered and stop the exporters."""
        self.provider.shutdown()

    def epoch_ns(self, monotonic: float) -> int:
        return int(monotonic * 1e9) + self._offset_ns

    # -- RPC spans ---------------------------------------------------------------------
    # Not opentelemetry-instrumentation-grpc's aio server interceptor: per call
    # it builds its attribute dict, copies the metadata, parses the peer and
    # wraps the context in a wrapt proxy (work these cached attributes avoid),
    # names spans "/service/method" and describes errors as "StatusCode.X:..."
    # (not the RPC conventions our spans and their tests follow), and it would
    # add two dependencies for about thirty lines.

    def serve_at(self, host: str, port: int) -> None:
        """Where the server listens: ``server.*`` attributes of every server span."""
        self._server = server_attributes(host, port)
        for attributes in self._rpc_attributes.values():
            attributes.update(self._server)

    def _method_attributes(self, method: str) -> dict[str, str | int]:
        return {"rpc.system": "grpc", "rpc.service": SERVICE, "rpc.method": method, **self._server}

    def start_rpc(self, method: str, context: Any) -> Span:
        """The server span of one RPC, continuing the caller's W3C trace."""
        parent = propagate.extract(_metadata_carrier(context))
        attributes = self._rpc_attributes.get(method)
        if attributes is None:
            attributes = self._rpc_attributes[method] = self._method_attributes(method)
        span = self.tracer.start_span(
            f"{SERVICE}/{method}", context=parent, kind=SpanKind.SERVER, attributes=attributes
        )
        if span.is_recording():
            peer = context.peer()
            if peer:
                span.set_attributes(peer_attributes(peer))
        return span

    def start_child(self, name: str, parent: Span, **attributes: Any) -> Span:
        return self.tracer.start_span(
            name, context=trace.set_span_in_context(parent), attributes=attributes or None
        )

    @staticmethod
    def end_rpc(span: Span, code: grpc.StatusCode, message: str = "") -> None:
        """Status per the RPC conventions, then end."""
        span.set_attribute("rpc.grpc.status_code", code.value[0])
        if code in _SERVER_ERRORS:
            span.set_status(Status(StatusCode.ERROR, message or code.name))
        span.end()

    @contextmanager
    def phase(self, name: str, parent: Span) -> Iterator[Span]:
        """A child span for one phase of a request (decode, encode), current
        while it runs; an error only as ``is_server_error`` says."""
        span = self.tracer.start_span(name, context=trace.set_span_in_context(parent))
        try:
            with trace.use_span(
                span, end_on_exit=False, record_exception=False, set_status_on_exception=False
            ):
                yield span
        except BaseException as exc:
            if is_server_error(exc):
                span.set_status(_error_status(exc))
            raise
        finally:
            span.end()

    def version(self, model: str, version: str) -> VersionTracing:
        return VersionTracing(self, model, version)


def _ms(seconds: float) -> float:
    return round(seconds * 1e3, 3)


def _span_of(entry: Queued) -> Span | None:
    span = entry.request.trace
    return span if isinstance(span, Span) else None


class VersionTracing:
    """Batch and queue spans of one model version (scheduler events)."""

    __slots__ = ("_attributes", "_tracing")

    def __init__(self, tracing: Tracing, model: str, version: str) -> None:
        self._tracing = tracing
        self._attributes = {"inferd.model.name": model, "inferd.model.version": version}

    def on_dispatch(
        self, entries: Sequence[Queued], reason: str, slack: float, now: float
    ) -> Span | None:
        spans = [s for s in map(_span_of, entries) if s is not None]
        parent = next((s for s in spans if s.is_recording()), None)
        if parent is None:
            return None  # nobody in this batch is sampled: no batch span
        tracing = self._tracing
        limit = tracing.max_links
        linked = spans if limit is None else spans[:limit]
        attributes: dict[str, Any] = {
            **self._attributes,
            "inferd.batch.requests": len(entries),
            "inferd.batch.dispatch_reason": reason,
            "inferd.batch.links_dropped": len(spans) - len(linked),
        }
        if math.isfinite(slack):
            attributes["inferd.batch.slack_ms"] = _ms(slack)
        start = tracing.epoch_ns(now)
        batch = tracing.tracer.start_span(
            "inferd.batch",
            context=trace.set_span_in_context(parent),
            links=[Link(s.get_span_context()) for s in linked],
            start_time=start,
            attributes=attributes,
        )
        back = [Link(batch.get_span_context())]
        for entry in entries:
            span = _span_of(entry)
            if span is not None and span.is_recording():
                self._queue_span(span, entry, now, start, back, "dispatched")
        return batch

    def _queue_span(
        self,
        parent: Span,
        entry: Queued,
        now: float,
        end_ns: int,
        links: Sequence[Link],
        outcome: str,
    ) -> None:
        tracing = self._tracing
        attributes: dict[str, Any] = {"inferd.queue.outcome": outcome}
        if math.isfinite(entry.deadline):
            attributes["inferd.deadline.slack_ms"] = _ms(entry.deadline - now)
        if math.isfinite(entry.predicted):
            # Against the queue and batch spans' lengths: how far off admission was.
            attributes["inferd.admission.predicted_ms"] = _ms(entry.predicted)
        span = tracing.tracer.start_span(
            "queue",
            context=trace.set_span_in_context(parent),
            links=links,
            start_time=tracing.epoch_ns(entry.arrival),
            attributes=attributes,
        )
        if outcome not in ("dispatched", "cancelled"):
            span.set_status(Status(StatusCode.ERROR, outcome))
        span.end(end_time=end_ns)

    def on_executed(self, token: object, record: BatchRecord) -> None:
        if not isinstance(token, Span):
            return
        token.set_attributes(
            {
                "inferd.batch.size": record.size,
                "inferd.batch.rows": record.rows,
                "inferd.batch.late": record.late,
                "inferd.batch.predicted_ms": _ms(record.predicted_s),
                "inferd.batch.compute_input_ms": _ms(record.input_s),
                "inferd.batch.compute_infer_ms": _ms(record.actual_s),
                "inferd.batch.compute_output_ms": _ms(record.output_s),
            }
        )
        if record.started:
            self._compute_span(token, record)
        token.end(end_time=self._tracing.epoch_ns(record.finished))

    def _compute_span(self, batch: Span, record: BatchRecord) -> None:
        """The engine call under its batch span: merging inputs, the engine,
        splitting outputs, laid end to end from when merging began."""
        tracing = self._tracing
        start = tracing.epoch_ns(record.started)
        input_end = start + int(record.input_s * 1e9)
        output_start = input_end + int(record.actual_s * 1e9)
        span = tracing.tracer.start_span(
            "compute", context=trace.set_span_in_context(batch), start_time=start
        )
        span.add_event("COMPUTE_INPUT_END", timestamp=input_end)
        span.add_event("COMPUTE_OUTPUT_START", timestamp=output_start)
        span.end(end_time=output_start + int(record.output_s * 1e9))

    def on_failed(self, token: object, error: BaseException, now: float) -> None:
        if not isinstance(token, Span):
            return
        if is_server_error(error):  # as each request's span will say
            token.set_status(_error_status(error))
        token.end(end_time=self._tracing.epoch_ns(now))

    def on_dropped(self, entry: Queued, outcome: str, now: float) -> None:
        """A request left the queue without running (expired, cancelled)."""
        span = _span_of(entry)
        if span is not None and span.is_recording():
            self._queue_span(span, entry, now, self._tracing.epoch_ns(now), (), outcome)
