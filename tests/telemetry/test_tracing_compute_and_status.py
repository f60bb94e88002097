"""The compute span under each batch span, and statuses that agree: a request
span is an error exactly when one of the spans under it is."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode
from telemetry_helpers import MakeTracing, children

from inferd.clients import InferenceClient, InferenceServerError
from inferd.engines import EngineError
from inferd.server.errors import InvalidArgument
from inferd.server.scheduler.records import BatchRecord

MakeServer = Callable[..., Any]
MODEL_INFER = "inference.GRPCInferenceService/ModelInfer"
PIXELS = {"pixels": np.ones((4, 64), np.float32)}
#: Spans built after the fact convert monotonic time to wall time once.
CLOCK_SLACK_NS = 1_000_000
#: Durations on the batch span are rounded to the microsecond.
ROUNDING_NS = 2_000


def _named(spans: Any, name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def _descendants(spans: Any, root: ReadableSpan) -> list[ReadableSpan]:
    found, todo = [], [root]
    while todo:
        kids = children(spans, todo.pop())
        found.extend(kids)
        todo.extend(kids)
    return found


def test_compute_has_a_span_of_its_own_under_the_batch_span(
    demo_repository: Path, make_server: MakeServer, make_tracing: MakeTracing
) -> None:
    tracing, exporter = make_tracing()
    server = make_server(demo_repository, tracing=tracing)
    with InferenceClient(server.address) as client:
        client.infer("digits_mlp", PIXELS)
    spans = exporter.get_finished_spans()
    (batch,) = _named(spans, "inferd.batch")
    (compute,) = children(spans, batch)
    assert compute.name == "compute"
    assert batch.start_time is not None and batch.end_time is not None
    assert compute.start_time is not None and compute.end_time is not None
    assert batch.start_time <= compute.start_time + CLOCK_SLACK_NS
    assert compute.end_time <= batch.end_time + CLOCK_SLACK_NS
    # Input copy, infer, output copy end to end, as the batch span's attributes say.
    attrs = dict(batch.attributes or {})
    input_end, output_start = compute.events
    assert (input_end.name, output_start.name) == ("COMPUTE_INPUT_END", "COMPUTE_OUTPUT_START")

    measured = [
        (compute.start_time, input_end.timestamp, "inferd.batch.compute_input_ms"),
        (input_end.timestamp, output_start.timestamp, "inferd.batch.compute_infer_ms"),
        (output_start.timestamp, compute.end_time, "inferd.batch.compute_output_ms"),
    ]
    for start, end, name in measured:
        assert abs((end - start) - float(attrs[name]) * 1e6) < ROUNDING_NS, name  # type: ignore[arg-type]
    assert float(attrs["inferd.batch.compute_infer_ms"]) > 0  # type: ignore[arg-type]
    assert compute.status.status_code is StatusCode.UNSET


def test_a_batch_record_without_a_start_time_gets_no_compute_span(
    make_tracing: MakeTracing,
) -> None:
    """Records the scheduler did not time (``started`` 0.0) would place the
    compute span at the clock's origin: there is none."""
    tracing, exporter = make_tracing()
    request = tracing.tracer.start_span("request")
    batch = tracing.tracer.start_span("inferd.batch", context=None)
    record = BatchRecord(4, 4, 1, "ready", 0.0, 0.001, 0.0005, finished=1.0)
    tracing.version("m", "1").on_executed(batch, record)
    request.end()
    assert [s.name for s in exporter.get_finished_spans()] == ["inferd.batch", "request"]


@pytest.mark.parametrize(
    ("raised", "status"),
    [
        (RuntimeError("internal detail"), StatusCode.ERROR),  # INTERNAL
        (InvalidArgument("bad input"), StatusCode.UNSET),  # the caller's
        (asyncio.CancelledError(), StatusCode.UNSET),  # CANCELLED
    ],
)
def test_a_phase_is_an_error_only_when_its_rpc_would_be(
    make_tracing: MakeTracing, raised: BaseException, status: StatusCode
) -> None:
    tracing, exporter = make_tracing()
    parent = tracing.tracer.start_span("request")
    with pytest.raises(type(raised)), tracing.phase("decode", parent):
        raise raised
    parent.end()
    (decode,) = _named(exporter.get_finished_spans(), "decode")
    assert decode.status.status_code is status
    if status is StatusCode.ERROR:  # the message a caller would get, not the exception's
        assert decode.status.description == "internal error while serving the request"


@pytest.fixture
def release() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()


@pytest.mark.parametrize(
    ("fault", "code", "error"),
    [
        ("", 0, False),
        ("raise", 13, True),  # INTERNAL
        ("oom", 8, False),  # RESOURCE_EXHAUSTED: retry with fewer rows
        ("hang", 14, True),  # UNAVAILABLE at the engine timeout
        ("bad_input", 3, False),  # INVALID_ARGUMENT, failing in decode
    ],
)
def test_a_request_span_agrees_with_the_spans_under_it(
    demo_repository: Path,
    make_server: MakeServer,
    make_tracing: MakeTracing,
    release: threading.Event,
    fault: str,
    code: int,
    error: bool,
) -> None:
    tracing, exporter = make_tracing()
    server = make_server(demo_repository, tracing=tracing, engine_timeout_s=0.3)
    engine = server.server.models.resolve("digits_mlp").engine
    real = engine.infer

    def infer(inputs: Any, outputs: Any = None) -> Any:
        if fault == "hang":
            release.wait(30)
        elif fault == "raise":
            raise EngineError("kernel failed")
        elif fault == "oom":
            raise MemoryError
        return real(inputs, outputs)

    engine.infer = infer
    inputs = {"pixels": np.ones((1, 3), np.float32)} if fault == "bad_input" else PIXELS
    with InferenceClient(server.address) as client:
        if fault:
            with pytest.raises(InferenceServerError):
                client.infer("digits_mlp", inputs)
        else:
            client.infer("digits_mlp", inputs)
    # An aborted RPC's span ends just after its status reaches the client.
    deadline = time.monotonic() + 10
    while not _named(exporter.get_finished_spans(), MODEL_INFER) and time.monotonic() < deadline:
        time.sleep(0.01)
    spans = exporter.get_finished_spans()
    (request,) = _named(spans, MODEL_INFER)
    assert dict(request.attributes or {})["rpc.grpc.status_code"] == code
    under = _descendants(spans, request)
    assert under, "no spans under the request"
    if fault in ("raise", "oom", "hang"):
        (batch,) = _named(under, "inferd.batch")
        assert (batch.status.status_code is StatusCode.ERROR) is error
    errors = [s.name for s in under if s.status.status_code is StatusCode.ERROR]
    assert (request.status.status_code is StatusCode.ERROR) is error
    assert bool(errors) is error, errors
