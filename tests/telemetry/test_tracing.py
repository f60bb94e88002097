"""Traces of a real server on 127.0.0.1, captured with an in-memory exporter."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, StatusCode
from telemetry_helpers import MakeTracing, children, linked_ids, span_id

from inferd.clients import AsyncInferenceClient, InferenceClient, InferenceServerError

MODEL_INFER = "inference.GRPCInferenceService/ModelInfer"
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
#: 1 ms: spans built after the fact convert monotonic time to wall time once.
CLOCK_SLACK_NS = 1_000_000

MakeServer = Callable[..., object]


def _traceparent(sampled: bool = True) -> tuple[tuple[str, str]]:
    return (("traceparent", f"00-{CALLER_TRACE}-{CALLER_SPAN}-{'01' if sampled else '00'}"),)


def _by_name(spans: tuple[ReadableSpan, ...] | list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def test_span_tree_of_one_request_continues_the_callers_trace(
    demo_repository: Path, make_server: MakeServer, make_tracing: MakeTracing
) -> None:
    tracing, exporter = make_tracing()
    server = make_server(demo_repository, tracing=tracing)
    with InferenceClient(server.address) as client:  # type: ignore[attr-defined]
        client.infer(
            "digits_mlp", {"pixels": np.ones((3, 64), np.float32)}, metadata=_traceparent()
        )
    spans = exporter.get_finished_spans()
    (root,) = _by_name(spans, MODEL_INFER)
    ctx = root.get_span_context()
    assert ctx is not None and ctx.trace_id == int(CALLER_TRACE, 16)
    assert root.parent is not None and root.parent.span_id == int(CALLER_SPAN, 16)
    assert root.parent.is_remote
    assert root.kind is SpanKind.SERVER
    attributes = dict(root.attributes or {})
    peer_port = attributes.pop("network.peer.port")
    assert isinstance(peer_port, int) and 0 < peer_port < 65536
    assert attributes == {
        "rpc.system": "grpc",
        "rpc.service": "inference.GRPCInferenceService",
        "rpc.method": "ModelInfer",
        "rpc.grpc.status_code": 0,
        "server.address": "127.0.0.1",
        "server.port": server.port,  # type: ignore[attr-defined]
        "network.peer.address": "127.0.0.1",
        "network.transport": "tcp",
        "network.type": "ipv4",
        "inferd.model.name": "digits_mlp",
        "inferd.model.version": "1",
        "inferd.request.rows": 3,
    }
    assert root.status.status_code is StatusCode.UNSET
    assert root.resource.attributes["service.name"] == "inferd-test"

    kids = {s.name: s for s in children(spans, root)}
    assert sorted(kids) == ["decode", "encode", "inferd.batch", "queue"]
    decode, queue, batch, encode = (kids[n] for n in ("decode", "queue", "inferd.batch", "encode"))
    # In order, inside the server span (phases measured on two clocks: allow 1 ms).
    assert root.start_time is not None and root.end_time is not None
    assert decode.start_time is not None and decode.end_time is not None
    assert queue.start_time is not None and queue.end_time is not None
    assert batch.start_time is not None and batch.end_time is not None
    assert encode.start_time is not None and encode.end_time is not None
    assert root.start_time <= decode.start_time <= decode.end_time
    assert decode.end_time <= queue.start_time + CLOCK_SLACK_NS
    assert queue.end_time == batch.start_time  # dispatch ends the wait and starts the batch
    assert batch.end_time <= encode.start_time + CLOCK_SLACK_NS
    assert encode.end_time <= root.end_time
    # The batch links to the request; the request's queue span links back.
    assert linked_ids(batch) == [span_id(root)]
    assert linked_ids(queue) == [span_id(batch)]
    battrs = dict(batch.attributes or {})
    assert battrs["inferd.model.name"] == "digits_mlp" and battrs["inferd.model.version"] == "1"
    assert battrs["inferd.batch.requests"] == 1 and battrs["inferd.batch.rows"] == 3
    assert battrs["inferd.batch.size"] >= 3
    assert battrs["inferd.batch.dispatch_reason"] in ("ready", "full", "deadline", "window")
    assert battrs["inferd.batch.links_dropped"] == 0
    assert battrs["inferd.batch.late"] == 0
    assert battrs["inferd.batch.compute_infer_ms"] > 0
    assert dict(queue.attributes or {})["inferd.queue.outcome"] == "dispatched"


def test_queue_span_carries_the_admission_prediction_for_requests_with_a_deadline(
    demo_repository: Path, make_server: MakeServer, make_tracing: MakeTracing
) -> None:
    """With a deadline the adaptive policy predicts at admission, and the queue
    span says what; without one nothing is predicted and nothing is said."""
    tracing, exporter = make_tracing()
    server = make_server(demo_repository, tracing=tracing)
    x = {"pixels": np.ones((2, 64), np.float32)}
    with InferenceClient(server.address) as client:  # type: ignore[attr-defined]
        client.infer("digits_mlp", x, timeout=5.0)
        client.infer("digits_mlp", x)
    spans = exporter.get_finished_spans()
    roots = sorted(_by_name(spans, MODEL_INFER), key=lambda s: s.start_time or 0)
    with_deadline, without = (
        dict(next(s for s in children(spans, root) if s.name == "queue").attributes or {})
        for root in roots
    )
    predicted = with_deadline["inferd.admission.predicted_ms"]
    assert isinstance(predicted, float) and 0 < predicted < 5000
    # The 5 s deadline as the server reads it (gRPC's timeout header may round it up).
    assert 0 < float(with_deadline["inferd.deadline.slack_ms"]) < 5100  # type: ignore[arg-type]
    assert "inferd.admission.predicted_ms" not in without
    assert "inferd.deadline.slack_ms" not in without


async def _concurrent_load(address: str, waves: int = 3, concurrency: int = 32) -> int:
    x = np.ones((1, 1024), np.float32)
    async with AsyncInferenceClient(address) as client:
        for _ in range(waves):
            await asyncio.gather(
                *(client.infer("dense_reference", {"x": x}) for _ in range(concurrency))
            )
    return waves * concurrency


def _batches_and_requests(
    spans: tuple[ReadableSpan, ...],
) -> tuple[list[ReadableSpan], dict[int, ReadableSpan]]:
    requests = {span_id(s): s for s in _by_name(spans, MODEL_INFER)}
    return _by_name(spans, "inferd.batch"), requests


def test_each_batch_span_links_every_request_in_it_under_concurrent_load(
    demo_repository: Path, make_server: MakeServer, make_tracing: MakeTracing
) -> None:
    tracing, exporter = make_tracing()
    server = make_server(demo_repository, tracing=tracing)
    sent = asyncio.run(_concurrent_load(server.address))  # type: ignore[attr-defined]
    spans = exporter.get_finished_spans()
    batches, requests = _batches_and_requests(spans)
    assert len(requests) == sent
    # Which batch each request rode in, from its own trace (queue span -> batch).
    rode: dict[int, int] = {}
    for request_id, request in requests.items():
        (queue,) = _by_name(children(spans, request), "queue")
        (batch_id,) = linked_ids(queue)
        rode[request_id] = batch_id
    linked_from: Counter[int] = Counter()
    for batch in batches:
        links = linked_ids(batch)
        attrs = dict(batch.attributes or {})
        assert attrs["inferd.batch.requests"] == len(links)
        assert attrs["inferd.batch.links_dropped"] == 0
        # Exactly the requests whose queue spans point at this batch.
        assert sorted(links) == sorted(r for r, b in rode.items() if b == span_id(batch))
        assert batch.parent is not None and batch.parent.span_id in links
        linked_from.update(links)
    assert set(linked_from) == set(requests)  # every request is linked...
    assert set(linked_from.values()) == {1}  # ...by exactly one batch
    assert max(len(b.links) for b in batches) > 1, "load too light to form a batch"


def test_link_limit_links_the_first_requests_and_counts_the_rest(
    demo_repository: Path, make_server: MakeServer, make_tracing: MakeTracing
) -> None:
    tracing, exporter = make_tracing(max_links=2)
    server = make_server(demo_repository, tracing=tracing)
    asyncio.run(_concurrent_load(server.address))  # type: ignore[attr-defined]
    spans = exporter.get_finished_spans()
    batches, requests = _batches_and_requests(spans)
    big = [b for b in batches if dict(b.attributes or {})["inferd.batch.requests"] > 2]
    assert big, "load too light to form a batch of more than 2 requests"
    for batch in big:
        attrs = dict(batch.attributes or {})
        assert len(batch.links) == 2
        assert attrs["inferd.batch.links_dropped"] == attrs["inferd.batch.requests"] - 2
        assert batch.dropped_links == 0  # we cut, the SDK did not have to
        assert set(linked_ids(batch)) <= set(requests)
    # Unlinked requests still find their batch through their queue span.
    riders = Counter(
        linked_ids(_by_name(children(spans, r), "queue")[0])[0] for r in requests.values()
    )
    for batch in big:
        assert riders[span_id(batch)] == dict(batch.attributes or {})["inferd.batch.requests"]


def test_stream_has_a_server_span_and_one_span_per_request(
    demo_repository: Path, make_server: MakeServer, make_tracing: MakeTracing
) -> None:
    tracing, exporter = make_tracing()
    server = make_server(demo_repository, tracing=tracing)
    items = [(f"r{i}", {"pixels": np.ones((1, 64), np.float32)}) for i in range(4)]
    items.append(("bad", {"pixels": np.ones((1, 3), np.float32)}))
    with InferenceClient(server.address) as client:  # type: ignore[attr-defined]
        replies = list(client.stream_infer("digits_mlp", items, metadata=_traceparent()))
    assert sum(isinstance(r, InferenceServerError) for r in replies) == 1
    spans = exporter.get_finished_spans()
    (stream,) = _by_name(spans, "inference.GRPCInferenceService/ModelStreamInfer")
    assert stream.kind is SpanKind.SERVER
    assert dict(stream.attributes or {})["rpc.grpc.status_code"] == 0
    ctx = stream.get_span_context()
    assert ctx is not None and ctx.trace_id == int(CALLER_TRACE, 16)
    messages = children(spans, stream)
    assert [m.name for m in messages] == ["inferd.stream_request"] * 5
    codes = sorted(dict(m.attributes or {})["rpc.grpc.status_code"] for m in messages)
    assert codes == [0, 0, 0, 0, 3]  # 3: INVALID_ARGUMENT
    batches = _by_name(spans, "inferd.batch")
    linked = {i for b in batches for i in linked_ids(b)}
    for message in messages:
        names = sorted(s.name for s in children(spans, message))
        if dict(message.attributes or {})["rpc.grpc.status_code"] == 0:
            assert span_id(message) in linked
            assert {"decode", "queue", "encode"} <= set(names)
        else:
            assert names == ["decode"]


def test_error_statuses_follow_the_rpc_conventions(
    demo_repository: Path, make_server: MakeServer, make_tracing: MakeTracing
) -> None:
    tracing, exporter = make_tracing()
    server = make_server(demo_repository, tracing=tracing)
    ok = {"pixels": np.ones((1, 64), np.float32)}
    with InferenceClient(server.address) as client:  # type: ignore[attr-defined]
        with pytest.raises(InferenceServerError):  # INVALID_ARGUMENT: the caller's fault
            client.infer("digits_mlp", {"pixels": np.ones((1, 3), np.float32)})
        with pytest.raises(InferenceServerError):  # NOT_FOUND
            client.infer("no_such_model", ok)
        with pytest.raises(InferenceServerError):  # DEADLINE_EXCEEDED: 1 µs budget
            client.infer("digits_mlp", ok, parameters={"timeout": 1})
        assert client.is_server_live()
    spans = exporter.get_finished_spans()
    roots = {
        dict(s.attributes or {})["rpc.grpc.status_code"]: s for s in _by_name(spans, MODEL_INFER)
    }
    assert sorted(roots) == [3, 4, 5]
    assert roots[3].status.status_code is StatusCode.UNSET
    (decode,) = _by_name(children(spans, roots[3]), "decode")
    assert decode.status.status_code is StatusCode.UNSET  # agrees with its request's
    assert roots[5].status.status_code is StatusCode.UNSET
    assert children(spans, roots[5]) == []  # never reached a model
    assert roots[4].status.status_code is StatusCode.ERROR
    (live,) = _by_name(spans, "inference.GRPCInferenceService/ServerLive")
    assert dict(live.attributes or {})["rpc.method"] == "ServerLive"


def test_unsampled_requests_make_no_spans_and_parent_decision_wins(
    demo_repository: Path, make_server: MakeServer, make_tracing: MakeTracing
) -> None:
    tracing, exporter = make_tracing(sampler=ParentBased(TraceIdRatioBased(0.0)))
    server = make_server(demo_repository, tracing=tracing)
    x = {"pixels": np.ones((1, 64), np.float32)}
    with InferenceClient(server.address) as client:  # type: ignore[attr-defined]
        for _ in range(5):
            client.infer("digits_mlp", x)  # ratio 0: not sampled
        client.infer("digits_mlp", x, metadata=_traceparent(sampled=False))
        assert exporter.get_finished_spans() == ()
        client.infer("digits_mlp", x, metadata=_traceparent(sampled=True))
    names = sorted(s.name for s in exporter.get_finished_spans())
    assert names == ["compute", "decode", "encode", "inferd.batch", MODEL_INFER, "queue"]


def test_always_off_sampler_traces_nothing_and_serves(
    demo_repository: Path, make_server: MakeServer, make_tracing: MakeTracing
) -> None:
    tracing, exporter = make_tracing(sampler=ALWAYS_OFF)
    server = make_server(demo_repository, tracing=tracing)
    x = np.ones((2, 1024), np.float32)

    async def load() -> None:
        async with AsyncInferenceClient(server.address) as client:  # type: ignore[attr-defined]
            await asyncio.gather(*(client.infer("dense_reference", {"x": x}) for _ in range(16)))

    asyncio.run(load())
    assert exporter.get_finished_spans() == ()


def test_tracing_off_does_no_tracer_work(
    demo_repository: Path, make_server: MakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from inferd.server.telemetry.tracing import Tracing

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("tracer used while tracing is off")

    for name in ("start_rpc", "start_child", "phase", "version"):
        monkeypatch.setattr(Tracing, name, fail)
    server = make_server(demo_repository)  # OTEL_TRACES_EXPORTER unset: off
    assert server.server.tracing is None  # type: ignore[attr-defined]
    assert server.server.servicer.tracing is None  # type: ignore[attr-defined]
    with InferenceClient(server.address) as client:  # type: ignore[attr-defined]
        client.infer("digits_mlp", {"pixels": np.ones((1, 64), np.float32)})
        replies = list(
            client.stream_infer("digits_mlp", [("a", {"pixels": np.ones((1, 64), np.float32)})])
        )
    assert not any(isinstance(r, InferenceServerError) for r in replies)


def test_every_rpc_has_a_server_span_even_unimplemented_ones(
    demo_repository: Path, make_server: MakeServer, make_tracing: MakeTracing
) -> None:
    import grpc

    from inferd.protos import grpc_service_pb2 as pb
    from inferd.protos import grpc_service_pb2_grpc as pb_grpc

    tracing, exporter = make_tracing()
    server = make_server(demo_repository, tracing=tracing)
    with grpc.insecure_channel(server.address) as channel:  # type: ignore[attr-defined]
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.SystemSharedMemoryStatus(pb.SystemSharedMemoryStatusRequest())
        assert info.value.code() is grpc.StatusCode.UNIMPLEMENTED
        stub.ModelMetadata(pb.ModelMetadataRequest(name="digits_mlp"))
    spans = {s.name: s for s in exporter.get_finished_spans()}
    load = spans["inference.GRPCInferenceService/SystemSharedMemoryStatus"]
    assert dict(load.attributes or {})["rpc.grpc.status_code"] == 12
    assert load.status.status_code is StatusCode.ERROR
    meta = spans["inference.GRPCInferenceService/ModelMetadata"]
    assert dict(meta.attributes or {})["rpc.grpc.status_code"] == 0


@pytest.mark.parametrize(
    "header",
    [
        "00-zzzz-00f067aa0ba902b7-01",  # not hex
        f"00-{'0' * 32}-00f067aa0ba902b7-01",  # all-zero trace id is invalid
        "garbage",
    ],
)
def test_a_malformed_traceparent_starts_a_new_trace(
    demo_repository: Path, make_server: MakeServer, make_tracing: MakeTracing, header: str
) -> None:
    tracing, exporter = make_tracing()
    server = make_server(demo_repository, tracing=tracing)
    with InferenceClient(server.address) as client:  # type: ignore[attr-defined]
        client.infer(
            "digits_mlp",
            {"pixels": np.ones((1, 64), np.float32)},
            metadata=(("traceparent", header),),
        )
    (root,) = _by_name(exporter.get_finished_spans(), MODEL_INFER)
    assert root.parent is None
    assert dict(root.attributes or {})["rpc.grpc.status_code"] == 0


def test_admin_rpcs_work_with_tracing_on(
    demo_repository: Path, make_server: MakeServer, make_tracing: MakeTracing
) -> None:
    """The admin servicer shares the _rpc decorator; tracing the inference
    service must not break it (admin calls are not traced)."""
    from inferd.clients.admin import AdminClient

    tracing, exporter = make_tracing()
    server = make_server(demo_repository, tracing=tracing)
    with AdminClient(server.address) as admin:  # type: ignore[attr-defined]
        assert isinstance(admin.routes(), list)
    assert not [s for s in exporter.get_finished_spans() if "ModelAdmin" in s.name]
