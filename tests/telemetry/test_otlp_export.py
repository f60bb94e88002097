"""Spans exported over real OTLP/gRPC to a receiver on 127.0.0.1, configured
only through the standard OTEL_* variables."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import descriptor_pool
from telemetry_helpers import Inferd

from benchmarks.otlp_sink import OtlpSink, attributes
from inferd.clients import InferenceClient

CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
SERVER_KIND = 2  # opentelemetry.proto.trace.v1.Span.SPAN_KIND_SERVER


@pytest.fixture
def sink() -> Iterator[OtlpSink]:
    receiver = OtlpSink()
    receiver.start()
    yield receiver
    receiver.stop()


def _otel_env(sink: OtlpSink, **extra: str) -> dict[str, str]:
    return {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint,
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_BSP_SCHEDULE_DELAY": "50",
        **extra,
    }


def test_our_protos_and_the_otlp_protos_share_one_process() -> None:
    import opentelemetry.proto.collector.trace.v1.trace_service_pb2  # noqa: F401

    import inferd.protos.grpc_service_pb2  # noqa: F401

    pool = descriptor_pool.Default()
    assert pool.FindServiceByName("inference.GRPCInferenceService")
    assert pool.FindServiceByName("opentelemetry.proto.collector.trace.v1.TraceService")


def test_in_process_server_exports_spans_with_its_resource(
    demo_repository: Path,
    make_server: Callable[..., object],
    sink: OtlpSink,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = _otel_env(
        sink,
        OTEL_SERVICE_NAME="inferd-otlp-test",
        OTEL_RESOURCE_ATTRIBUTES="deployment.environment=test",
    )
    for key, val in env.items():
        monkeypatch.setenv(key, val)
    server = make_server(demo_repository)
    traceparent = (("traceparent", f"00-{CALLER_TRACE}-b7ad6b7169203331-01"),)
    with InferenceClient(server.address) as client:  # type: ignore[attr-defined]
        for _ in range(3):
            client.infer(
                "digits_mlp", {"pixels": np.ones((1, 64), np.float32)}, metadata=traceparent
            )
    assert sink.wait_for_spans(3 * 5), f"only {sink.span_count} spans arrived"
    received = sink.spans()
    resources = {json.dumps(r, sort_keys=True) for r, _ in received}
    assert len(resources) == 1
    resource, _ = received[0]
    assert resource["service.name"] == "inferd-otlp-test"
    assert resource["deployment.environment"] == "test"
    assert resource["service.version"] == "0.1.0"
    assert resource["telemetry.sdk.language"] == "python"
    servers = [s for _, s in received if s.kind == SERVER_KIND]
    assert len(servers) == 3
    for span in servers:
        assert span.name == "inference.GRPCInferenceService/ModelInfer"
        assert span.trace_id.hex() == CALLER_TRACE
        assert attributes(span.attributes)["rpc.system"] == "grpc"
    batches = [s for _, s in received if s.name == "inferd.batch"]
    assert batches and all(len(b.links) >= 1 for b in batches)


def test_inferd_serve_exports_and_logs_the_same_trace_ids(
    demo_repository: Path, sink: OtlpSink, tmp_path: Path
) -> None:
    """The CLI path: OTEL_* from the environment, JSON logs with trace ids,
    service.name defaulting to inferd."""
    server = Inferd(
        demo_repository,
        tmp_path / "stderr.log",
        "--log-format",
        "json",
        "--log-requests",
        env=_otel_env(sink),
    )
    try:
        server.wait_ready()
        with InferenceClient(server.address) as client:
            for i in range(4):
                client.infer(
                    "digits_mlp", {"pixels": np.ones((1, 64), np.float32)}, request_id=f"r{i}"
                )
        assert sink.wait_for_spans(4 * 5), f"only {sink.span_count} spans arrived"
    finally:
        assert server.stop() == 0
    received = sink.spans()
    assert {r["service.name"] for r, _ in received} == {"inferd"}
    server_traces = {s.trace_id.hex() for _, s in received if s.name.endswith("/ModelInfer")}
    lines = [json.loads(line) for line in server.log_lines()]
    requests = [line for line in lines if line.get("event") == "request"]
    assert [r["request_id"] for r in requests] == ["r0", "r1", "r2", "r3"]
    assert {r["trace_id"] for r in requests} == server_traces
    for record in requests:
        assert record["logger"] == "inferd.requests" and record["code"] == "OK"
        assert record["model"] == "digits_mlp" and record["version"] == "1"
        assert len(record["span_id"]) == 16
