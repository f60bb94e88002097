"""Our clients send the caller's OpenTelemetry trace context by themselves:
the server's span joins the caller's trace with no metadata passed by hand."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState
from telemetry_helpers import ROOT, MakeTracing, span_id

from inferd.clients import AsyncInferenceClient, InferenceClient, InferenceServerError

MakeServer = Callable[..., Any]
PIXELS = {"pixels": np.ones((1, 64), np.float32)}
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_PARENT = f"00-{CALLER_TRACE}-00f067aa0ba902b7-01"


class MetadataRecorder(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Keeps the invocation metadata of every inference call the server receives."""

    def __init__(self) -> None:
        self.calls: list[dict[str, str]] = []

    async def intercept_service(
        self, continuation: Callable[[Any], Any], details: grpc.HandlerCallDetails
    ) -> Any:
        if "GRPCInferenceService/Model" in details.method:
            self.calls.append({k: v for k, v in details.invocation_metadata or ()})
        return await continuation(details)


@pytest.fixture
def client_tracer() -> Iterator[tuple[trace.Tracer, InMemorySpanExporter]]:
    """A tracer of the calling application, apart from the server's."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider.get_tracer("caller"), exporter
    provider.shutdown()


def _server_span(spans: tuple[ReadableSpan, ...], method: str) -> ReadableSpan:
    (span,) = [s for s in spans if s.name == f"inference.GRPCInferenceService/{method}"]
    return span


def _assert_joined(server_span: ReadableSpan, client_span: ReadableSpan) -> None:
    ctx, parent = server_span.get_span_context(), client_span.get_span_context()
    assert ctx is not None and parent is not None
    assert ctx.trace_id == parent.trace_id
    assert server_span.parent is not None and server_span.parent.is_remote
    assert server_span.parent.span_id == span_id(client_span)


def _call_sync(address: str, method: str) -> None:
    with InferenceClient(address) as client:
        if method == "ModelInfer":
            client.infer("digits_mlp", PIXELS)
        else:
            replies = list(client.stream_infer("digits_mlp", [("a", PIXELS), ("b", PIXELS)]))
            assert len(replies) == 2
            assert not any(isinstance(r, InferenceServerError) for r in replies)


def _call_aio(address: str, method: str, tracer: trace.Tracer) -> None:
    async def call() -> None:
        async with AsyncInferenceClient(address) as client:
            with tracer.start_as_current_span("client-call"):
                if method == "ModelInfer":
                    await client.infer("digits_mlp", PIXELS)
                else:
                    replies = [r async for r in client.stream_infer("digits_mlp", [("a", PIXELS)])]
                    assert not isinstance(replies[0], InferenceServerError)

    asyncio.run(call())


@pytest.mark.parametrize("method", ["ModelInfer", "ModelStreamInfer"])
@pytest.mark.parametrize("flavour", ["sync", "aio"])
def test_client_span_and_server_span_share_a_trace(
    demo_repository: Path,
    make_server: MakeServer,
    make_tracing: MakeTracing,
    client_tracer: tuple[trace.Tracer, InMemorySpanExporter],
    flavour: str,
    method: str,
) -> None:
    tracing, exporter = make_tracing()
    server = make_server(demo_repository, tracing=tracing)
    tracer, client_spans = client_tracer
    if flavour == "sync":
        with tracer.start_as_current_span("client-call"):
            _call_sync(server.address, method)
    else:
        _call_aio(server.address, method, tracer)
    (client_span,) = client_spans.get_finished_spans()
    _assert_joined(_server_span(exporter.get_finished_spans(), method), client_span)


def test_metadata_the_caller_sets_wins_over_the_active_span(
    demo_repository: Path,
    make_server: MakeServer,
    client_tracer: tuple[trace.Tracer, InMemorySpanExporter],
) -> None:
    recorder = MetadataRecorder()
    server = make_server(demo_repository, [recorder])
    tracer, _ = client_tracer
    by_hand = (("traceparent", CALLER_PARENT),)
    with tracer.start_as_current_span("client-call"):
        with InferenceClient(server.address) as client:
            client.infer("digits_mlp", PIXELS, metadata=by_hand)
        with InferenceClient(server.address, metadata=by_hand) as client:  # client-wide
            client.infer("digits_mlp", PIXELS)
            client.infer("digits_mlp", PIXELS, metadata=(("x-other", "1"),))
    assert [call["traceparent"] for call in recorder.calls] == [CALLER_PARENT] * 3


def test_a_hand_set_traceparent_keeps_the_spans_tracestate_out(
    demo_repository: Path,
    make_server: MakeServer,
    client_tracer: tuple[trace.Tracer, InMemorySpanExporter],
) -> None:
    """traceparent and tracestate describe one trace: the caller's traceparent
    must not travel with the active span's tracestate."""
    recorder = MetadataRecorder()
    server = make_server(demo_repository, [recorder])
    tracer, _ = client_tracer
    upstream = NonRecordingSpan(
        SpanContext(
            int(CALLER_TRACE, 16),
            0x00F067AA0BA902B7,
            is_remote=True,
            trace_flags=TraceFlags(TraceFlags.SAMPLED),
            trace_state=TraceState([("vendor", "state")]),
        )
    )
    own_parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    within = trace.set_span_in_context(upstream)
    with (
        tracer.start_as_current_span("client-call", context=within),
        InferenceClient(server.address) as client,
    ):
        client.infer("digits_mlp", PIXELS)  # the span's pair
        client.infer("digits_mlp", PIXELS, metadata=(("traceparent", own_parent),))
    propagated, by_hand = recorder.calls
    assert propagated["tracestate"] == "vendor=state"
    assert propagated["traceparent"].split("-")[1] == CALLER_TRACE
    assert by_hand["traceparent"] == own_parent
    assert "tracestate" not in by_hand


def test_no_trace_context_is_sent_without_an_active_span(
    demo_repository: Path, make_server: MakeServer
) -> None:
    recorder = MetadataRecorder()
    server = make_server(demo_repository, [recorder])
    _call_sync(server.address, "ModelInfer")
    _call_sync(server.address, "ModelStreamInfer")
    assert len(recorder.calls) == 2
    for call in recorder.calls:
        assert not {"traceparent", "tracestate", "baggage"} & set(call)


_WITHOUT_OPENTELEMETRY = textwrap.dedent(
    """
    import asyncio, sys
    sys.modules["opentelemetry"] = None  # as if the package were not installed
    import numpy as np
    from inferd.clients import AsyncInferenceClient, InferenceClient
    try:
        import opentelemetry  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("opentelemetry still importable")
    x = {"pixels": np.ones((1, 64), np.float32)}
    with InferenceClient(sys.argv[1]) as client:
        assert client.infer("digits_mlp", x)["probabilities"].shape == (1, 10)
        (reply,) = client.stream_infer("digits_mlp", [("a", x)])
        assert reply["probabilities"].shape == (1, 10)

    async def main():
        async with AsyncInferenceClient(sys.argv[1]) as client:
            result = await client.infer("digits_mlp", x)
            assert result["probabilities"].shape == (1, 10)

    asyncio.run(main())
    print("ok")
    """
)


def test_clients_work_without_opentelemetry(demo_repository: Path, make_server: MakeServer) -> None:
    server = make_server(demo_repository)
    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT_OPENTELEMETRY, server.address],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
