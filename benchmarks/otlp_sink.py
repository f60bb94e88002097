"""A minimal OTLP/gRPC trace receiver on 127.0.0.1, for tests and benchmarks.

Built on the collector's own service definition (``opentelemetry-proto``), so
an exporter talks to it exactly as to an OpenTelemetry Collector. It keeps
what it receives (or only counts spans, for long benchmark runs).
"""

from __future__ import annotations

import threading
import time
from concurrent import futures
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2


def attribute_value(value: common_pb2.AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


def attributes(items: Any) -> dict[str, Any]:
    return {kv.key: attribute_value(kv.value) for kv in items}


class OtlpSink(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
    def __init__(self, *, keep: bool = True) -> None:
        self.keep = keep
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.span_count = 0
        self._lock = threading.Lock()
        self._server: grpc.Server | None = None
        self.port = 0

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        count = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
        with self._lock:
            self.span_count += count
            if self.keep:
                self.requests.append(request)
        return trace_service_pb2.ExportTraceServiceResponse()

    def start(self) -> int:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, server)
        self.port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self._server = server
        return self.port

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(0).wait(5)
            self._server = None

    def spans(self) -> list[tuple[dict[str, Any], Any]]:
        """Every span received, with its resource's attributes."""
        with self._lock:
            requests = list(self.requests)
        return [
            (attributes(rs.resource.attributes), span)
            for request in requests
            for rs in request.resource_spans
            for ss in rs.scope_spans
            for span in ss.spans
        ]

    def wait_for_spans(self, count: int, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self.span_count >= count:
                    return True
            time.sleep(0.02)
        return False


def main() -> None:
    """``python -m benchmarks.otlp_sink``: count spans until SIGTERM/SIGINT;
    prints the port first, the span count last."""
    import signal
    import sys

    sink = OtlpSink(keep=False)
    print(sink.start(), flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    sink.stop()
    print(sink.span_count, flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
