"""Request bytes that do not parse as the request message: INVALID_ARGUMENT
with a one-line reason, no traceback in the log, and the server goes on."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from conftest import ServerThread

from inferd.protos import grpc_service_pb2 as pb
from inferd.protos import grpc_service_pb2_grpc as pb_grpc
from inferd.protos.inferd.admin.v1 import admin_pb2_grpc as admin_grpc
from inferd.server.grpc.malformed import REASON, add_servicer

MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
#: model_name (field 1) holding bytes that are not UTF-8.
BAD_UTF8_NAME = b"\x0a\x02\xff\xfe"
#: inputs (field 5) whose name (field 1) is not UTF-8.
BAD_UTF8_INPUT = b"\x0a\x0adigits_mlp" + b"\x2a\x04\x0a\x02\xc3\x28"
#: A length that runs past the end of the message.
TRUNCATED = b"\x0a\x7fdigits"
GARBAGE = bytes(range(256)) * 4


def good() -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest(model_name="digits_mlp")
    msg.inputs.add(name="pixels", datatype="FP32", shape=[1, 64])
    msg.raw_input_contents.append(np.zeros((1, 64), np.float32).tobytes())
    return msg


@pytest.mark.parametrize(
    "payload",
    [BAD_UTF8_NAME, BAD_UTF8_INPUT, TRUNCATED, GARBAGE],
    ids=["utf8-model-name", "utf8-input-name", "truncated", "garbage"],
)
def test_unparsable_request_is_invalid_argument_without_traceback(
    payload: bytes, demo_server: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    with grpc.insecure_channel(demo_server.address) as channel:
        raw = channel.unary_unary(MODEL_INFER)  # no serializers: bytes as they are
        caplog.clear()
        with caplog.at_level(logging.INFO):
            for _ in range(20):
                with pytest.raises(grpc.RpcError) as info:
                    raw(payload, timeout=10)
                assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert info.value.details() == REASON
        assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
        assert len([r for r in caplog.records if "malformed" in r.getMessage()]) <= 1
        reply = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(good(), timeout=10)
        assert reply.model_name == "digits_mlp"


def test_unparsable_message_in_a_stream_ends_it_with_invalid_argument(
    demo_server: ServerThread,
) -> None:
    with grpc.insecure_channel(demo_server.address) as channel:
        stream = channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer")

        def messages() -> Iterator[bytes]:
            yield good().SerializeToString()
            yield GARBAGE

        call = stream(messages(), timeout=30)
        with pytest.raises(grpc.RpcError) as info:
            for _ in call:
                pass
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_malformed_stream_message_never_leaves_the_call_hanging(
    demo_server: ServerThread,
) -> None:
    """Aborting from the task that reads the stream raced the handler's own
    writes: about 1 call in 20 hung until its deadline. Every one of these
    ends at once with INVALID_ARGUMENT."""
    codes: dict[str, int] = {}
    with grpc.insecure_channel(demo_server.address) as channel:
        stream = channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer")

        def messages() -> Iterator[bytes]:
            yield good().SerializeToString()
            yield GARBAGE

        for _ in range(100):
            try:
                for _reply in stream(messages(), timeout=5):
                    pass
                code = "OK"
            except grpc.RpcError as err:
                code = err.code().name
            codes[code] = codes.get(code, 0) + 1
    assert codes == {"INVALID_ARGUMENT": 100}


def test_requests_read_before_a_malformed_message_are_answered_first(
    demo_server: ServerThread,
) -> None:
    """A stream's accepted requests are not lost to a bad message behind
    them: each is answered, then the call ends with INVALID_ARGUMENT."""
    with grpc.insecure_channel(demo_server.address) as channel:
        stream = channel.stream_stream(
            "/inference.GRPCInferenceService/ModelStreamInfer",
            response_deserializer=pb.ModelStreamInferResponse.FromString,
        )

        def messages() -> Iterator[bytes]:
            for n in range(8):
                msg = good()
                msg.id = f"r{n}"
                yield msg.SerializeToString()
            yield GARBAGE

        for _ in range(10):
            answered: list[str] = []
            with pytest.raises(grpc.RpcError) as info:
                for reply in stream(messages(), timeout=10):
                    assert not reply.error_message
                    answered.append(reply.infer_response.id)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert sorted(answered) == [f"r{n}" for n in range(8)]


def test_a_method_served_through_the_generic_handler_answers_malformed_bytes_too(
    demo_server: ServerThread,
) -> None:
    # ModelMetadata is not registered by name (REGISTERED_METHODS): gRPC finds it
    # through the generic handler, which must carry the same deserializer.
    with grpc.insecure_channel(demo_server.address) as channel:
        raw = channel.unary_unary("/inference.GRPCInferenceService/ModelMetadata")
        with pytest.raises(grpc.RpcError) as info:
            raw(GARBAGE, timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.details() == REASON
        reply = pb_grpc.GRPCInferenceServiceStub(channel).ModelMetadata(
            pb.ModelMetadataRequest(name="digits_mlp"), timeout=10
        )
        assert reply.name == "digits_mlp"


def test_only_the_inference_methods_are_registered_by_name() -> None:
    # grpc.aio waits on one pending task per method registered by name for
    # every call it accepts: the other methods go through the generic handler.
    asyncio.run(_register_both_services())


async def _register_both_services() -> None:
    server = grpc.aio.server()
    named: dict[str, list[str]] = {}
    generic: list[object] = []
    add_named = server.add_registered_method_handlers
    add_generic = server.add_generic_rpc_handlers

    def record_named(service: str, handlers: dict[str, object]) -> None:
        named[service] = sorted(handlers)
        add_named(service, handlers)

    def record_generic(handlers: tuple[object, ...]) -> None:
        generic.extend(handlers)
        add_generic(handlers)

    server.add_registered_method_handlers = record_named  # type: ignore[method-assign]
    server.add_generic_rpc_handlers = record_generic  # type: ignore[method-assign]
    inference = pb_grpc.GRPCInferenceServiceServicer()
    add_servicer(pb_grpc.add_GRPCInferenceServiceServicer_to_server, inference, server)
    add_servicer(
        admin_grpc.add_ModelAdminServicer_to_server, admin_grpc.ModelAdminServicer(), server
    )
    assert named == {"inference.GRPCInferenceService": ["ModelInfer", "ModelStreamInfer"]}
    assert len(generic) == 2  # every method of both services, by the generic handler
    details = type("Details", (), {"method": "/inference.GRPCInferenceService/ServerLive"})()
    assert generic[0].service(details) is not None  # type: ignore[attr-defined]
