"""HTTP inference requests are traced like gRPC ones: a server span that
continues the caller's W3C ``traceparent`` and parents the data plane's spans."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import ServerThread
from http_helpers import http_port, request

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
PIXELS = {"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1, 64], "data": [0] * 64}]}
NAME = "POST /v2/models/{model}[/versions/{version}]/infer"


def _spans(exporter: Any, name: str, count: int) -> list[Any]:
    deadline = time.monotonic() + 10
    while True:
        spans = [s for s in exporter.get_finished_spans() if s.name == name]
        if len(spans) >= count or time.monotonic() > deadline:
            return spans
        time.sleep(0.05)


def test_http_infer_continues_the_callers_trace(
    demo_repository: Path,
    make_server: Callable[..., ServerThread],
    make_tracing: Callable[..., Any],
) -> None:
    tracing, exporter = make_tracing()
    server = make_server(demo_repository, tracing=tracing, allow_http=True)
    port = http_port(server)
    traceparent = {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"}
    status, _, _ = request(port, "POST", "/v2/models/digits_mlp/infer", PIXELS, traceparent)
    assert status == 200
    status, _, _ = request(port, "POST", "/v2/models/nope/infer", PIXELS, traceparent)
    assert status == 404
    ok, missing = _spans(exporter, NAME, 2)[:2]
    for span in (ok, missing):
        assert format(span.context.trace_id, "032x") == TRACE_ID
        assert span.parent is not None and format(span.parent.span_id, "016x") == PARENT_ID
        assert span.attributes["http.request.method"] == "POST"
    assert ok.attributes["http.response.status_code"] == 200
    assert ok.attributes["inferd.model.name"] == "digits_mlp"
    # A 4xx is the caller's error, not the server's.
    assert missing.attributes["http.response.status_code"] == 404
    assert missing.status.status_code.name == "UNSET"
    children = [
        s
        for s in exporter.get_finished_spans()
        if s.parent is not None and s.parent.span_id == ok.context.span_id
    ]
    assert {"decode"} <= {s.name for s in children}
