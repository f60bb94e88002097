"""Inputs valid on the wire that the engine cannot take are the caller's
fault: INVALID_ARGUMENT, refused before batching so batch-mates succeed."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest

from inferd.clients import AsyncInferenceClient, InferenceServerError


def _text_inputs(tag: bytes) -> dict[str, np.ndarray]:
    return {
        "token_ids": np.arange(8, dtype=np.int64).reshape(1, 8),
        "weights": np.ones((1, 8), dtype=np.float16),
        "tag": np.array([[tag]], dtype=object),
    }


async def test_non_utf8_text_is_invalid_argument_and_spares_its_batch(
    server_address: str,
) -> None:
    async with AsyncInferenceClient(server_address) as client:
        calls = [client.infer("text_stats", _text_inputs(b"ok-%d" % i)) for i in range(6)]
        calls.insert(3, client.infer("text_stats", _text_inputs(b"\xff\xfe")))
        results = await asyncio.gather(*calls, return_exceptions=True)
    bad = results.pop(3)
    assert isinstance(bad, InferenceServerError)
    assert bad.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "tag" in bad.details and "UTF-8" in bad.details
    for i, result in enumerate(results):
        assert not isinstance(result, BaseException), result
        assert result["tag_echo"][0, 0] == b"ok-%d" % i


def test_engine_input_error_is_an_engine_error() -> None:
    from inferd.engines import EngineError, EngineInputError

    with pytest.raises(EngineError):
        raise EngineInputError("x")


def test_classification_parameter_that_is_not_an_integer_is_refused(server_address: str) -> None:
    # Triton's classification extension takes K as int64_param only; any other
    # type is refused rather than read as some default K.
    from inferd.protos import grpc_service_pb2 as pb
    from inferd.protos.grpc_service_pb2_grpc import GRPCInferenceServiceStub

    request = pb.ModelInferRequest(model_name="digits_mlp")
    request.inputs.add(name="pixels", datatype="FP32", shape=[1, 64])
    request.raw_input_contents.append(np.zeros((1, 64), np.float32).tobytes())
    out = request.outputs.add(name="probabilities")
    out.parameters["classification"].string_param = "3"
    with grpc.insecure_channel(server_address) as channel, pytest.raises(grpc.RpcError) as info:
        GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'classification' parameter, expected int64_param" in (info.value.details() or "")
