"""Offline tests of the inferd client: codec round trips, error conversion, the
CLI's argument handling, and both clients against an in-process echo servicer
(no inferd server needed)."""

from __future__ import annotations

import json
import socket
import struct
import time
from collections.abc import AsyncIterator, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import ml_dtypes
import numpy as np
import pytest

from inferd.clients import (
    AsyncInferenceClient,
    InferenceClient,
    InferenceServerError,
    InferResult,
    _codec,
)
from inferd.clients.cli import infer_main, models_main
from inferd.clients.errors import from_rpc_error
from inferd.protos import grpc_service_pb2 as pb
from inferd.protos import grpc_service_pb2_grpc as pb_grpc
from inferd.protos import model_config_pb2 as mc
from inferd.protos.model_card import with_model_card

SAMPLES: dict[str, np.ndarray] = {
    "BOOL": np.array([[True, False, True]]),
    "INT8": np.array([-128, 0, 127], dtype=np.int8),
    "INT16": np.array([-32768, 1, 32767], dtype=np.int16),
    "INT32": np.array([[-(2**31)], [2**31 - 1]], dtype=np.int32),
    "INT64": np.array([-(2**63), 0, 2**63 - 1], dtype=np.int64),
    "UINT8": np.array([0, 255], dtype=np.uint8),
    "UINT16": np.array([0, 65535], dtype=np.uint16),
    "UINT32": np.array([0, 2**32 - 1], dtype=np.uint32),
    "UINT64": np.array([0, 2**64 - 1], dtype=np.uint64),
    "FP16": np.array([0.5, -1.0, np.inf], dtype=np.float16),
    "BF16": np.array([[1.0, -2.5], [3.0, 0.0]], dtype=ml_dtypes.bfloat16),
    "FP32": np.arange(12, dtype=np.float32).reshape(2, 3, 2),
    "FP64": np.array([np.pi, -0.0, np.nan]),
    "BYTES": np.array([b"", b"\xff\xfe\x00", b"text"], dtype=object),
}


def _length_prefixed(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(i)) + i for i in items)


# --- encode -------------------------------------------------------------------------


@pytest.mark.parametrize("datatype", sorted(SAMPLES))
def test_encode_every_datatype(datatype: str) -> None:
    array = SAMPLES[datatype]
    request = _codec.encode_request("m", {"x": array}, version="3", request_id="r1")
    assert request.model_name == "m" and request.model_version == "3" and request.id == "r1"
    (tensor,) = request.inputs
    assert tensor.name == "x"
    assert tensor.datatype == datatype
    assert list(tensor.shape) == list(array.shape)
    assert not tensor.HasField("contents")
    raw = request.raw_input_contents[0]
    if datatype == "BYTES":
        assert raw == _length_prefixed(b"", b"\xff\xfe\x00", b"text")
    else:
        assert raw == array.tobytes()
    # And back through the decoder, bit for bit (NaN included).
    decoded = _codec.decode_tensor(datatype, tensor.shape, raw, None)
    assert decoded.dtype == array.dtype and decoded.shape == array.shape
    if datatype == "BYTES":
        assert decoded.tolist() == array.tolist()
    else:
        assert decoded.tobytes() == array.tobytes()


def test_str_and_fixed_width_bytes_arrays_are_bytes() -> None:
    request = _codec.encode_request(
        "m",
        {
            "u": np.array([["héllo", ""]]),
            "s": np.array([b"ab", b"c"]),
            "o": np.array(["x", b"y"], dtype=object),
        },
    )
    assert [t.datatype for t in request.inputs] == ["BYTES"] * 3
    assert list(request.inputs[0].shape) == [1, 2]
    assert request.raw_input_contents[0] == _length_prefixed("héllo".encode(), b"")
    assert request.raw_input_contents[1] == _length_prefixed(b"ab", b"c")
    assert request.raw_input_contents[2] == _length_prefixed(b"x", b"y")


def test_empty_bytes_tensor() -> None:
    request = _codec.encode_request("m", {"x": np.empty((0, 2), dtype=object)})
    assert list(request.inputs[0].shape) == [0, 2]
    assert request.raw_input_contents[0] == b""


@pytest.mark.parametrize(
    "view",
    [
        lambda a: a[:, ::2],
        lambda a: a.T,
        lambda a: a[::-1],
        lambda a: a.astype(">f4"),
        lambda a: np.asfortranarray(a),
    ],
    ids=["strided", "transposed", "reversed", "big-endian", "fortran"],
)
def test_non_contiguous_inputs_go_row_major_little_endian(view: Any) -> None:
    array = view(np.arange(24, dtype=np.float32).reshape(4, 6))
    request = _codec.encode_request("m", {"x": array})
    assert request.inputs[0].datatype == "FP32"
    assert list(request.inputs[0].shape) == list(array.shape)
    expected = np.ascontiguousarray(array).astype("<f4").tobytes()
    assert request.raw_input_contents[0] == expected


def test_inputs_keep_their_order_and_scalars_work() -> None:
    request = _codec.encode_request("m", {"b": np.float64(2.0), "a": np.zeros(2, np.int32)})
    assert [t.name for t in request.inputs] == ["b", "a"]
    assert list(request.inputs[0].shape) == []
    assert len(request.raw_input_contents) == 2


def test_unsupported_inputs_fail_before_sending() -> None:
    with pytest.raises(ValueError, match=r"input 'z'.*complex"):
        _codec.encode_request("m", {"z": np.zeros(2, np.complex64)})
    # bytes(3) would silently become three zero bytes.
    with pytest.raises(ValueError, match=r"input 'o'.*element 1 is int"):
        _codec.encode_request("m", {"o": np.array([b"a", 3], dtype=object)})


def test_requested_outputs() -> None:
    assert not _codec.encode_request("m", {}).outputs
    request = _codec.encode_request("m", {}, outputs=["a", "b"])
    assert [o.name for o in request.outputs] == ["a", "b"]
    # A lone string is one name, not a sequence of letters.
    assert [o.name for o in _codec.encode_request("m", {}, outputs="label").outputs] == ["label"]


def test_parameters_round_trip() -> None:
    params: dict[str, Any] = {
        "flag": True,
        "n": -5,
        "big": 2**64 - 1,
        "np_int": np.int32(7),
        "np_bool": np.bool_(False),
        "ratio": 0.25,
        "name": "x",
    }
    request = _codec.encode_request("m", {}, parameters=params)
    kinds = {k: v.WhichOneof("parameter_choice") for k, v in request.parameters.items()}
    assert kinds == {
        "flag": "bool_param",
        "n": "int64_param",
        "big": "uint64_param",
        "np_int": "int64_param",
        "np_bool": "bool_param",
        "ratio": "double_param",
        "name": "string_param",
    }
    decoded = _codec.decode_parameters(request.parameters)
    assert decoded == {**params, "np_int": 7, "np_bool": False}
    assert decoded["flag"] is True
    with pytest.raises(TypeError, match="'bad'"):
        _codec.encode_request("m", {}, parameters={"bad": [1]})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="64 bits"):
        _codec.encode_request("m", {}, parameters={"huge": 2**64})


# --- decode -------------------------------------------------------------------------


def _response() -> Any:
    response = pb.ModelInferResponse(model_name="digits_mlp", model_version="1", id="req-7")
    response.parameters["sequence_end"].bool_param = True
    response.outputs.add(name="probabilities", datatype="FP32", shape=[2, 3])
    response.raw_output_contents.append(np.arange(6, dtype="<f4").tobytes())
    response.outputs.add(name="label", datatype="INT64", shape=[2, 1])
    response.raw_output_contents.append(np.array([[5], [2]], dtype="<i8").tobytes())
    response.outputs.add(name="text", datatype="BYTES", shape=[2])
    response.raw_output_contents.append(_length_prefixed(b"", b"\x80hi"))
    return response


def test_decode_response() -> None:
    result = _codec.decode_response(_response())
    assert isinstance(result, InferResult)
    assert (result.model_name, result.model_version, result.id) == ("digits_mlp", "1", "req-7")
    assert result.parameters == {"sequence_end": True}
    assert list(result) == ["probabilities", "label", "text"]
    assert len(result) == 3 and "label" in result and "nope" not in result
    np.testing.assert_array_equal(result["probabilities"], np.arange(6).reshape(2, 3))
    assert result["probabilities"].dtype == np.float32
    np.testing.assert_array_equal(result["label"], [[5], [2]])
    assert result["label"].dtype == np.int64
    assert result["text"].dtype == object and result["text"].tolist() == [b"", b"\x80hi"]
    with pytest.raises(ValueError):
        result["label"][0, 0] = 1  # read-only
    with pytest.raises(KeyError):
        result["nope"]
    assert "probabilities: float32[2, 3]" in repr(result)


def test_decode_typed_contents() -> None:
    response = pb.ModelInferResponse()
    response.outputs.add(name="i8", datatype="INT8", shape=[3]).contents.int_contents.extend(
        [-1, 0, 1]
    )
    response.outputs.add(name="f", datatype="FP32", shape=[1, 2]).contents.fp32_contents.extend(
        [0.5, 1.5]
    )
    response.outputs.add(name="b", datatype="BOOL", shape=[2]).contents.bool_contents.extend(
        [True, False]
    )
    response.outputs.add(name="s", datatype="BYTES", shape=[2]).contents.bytes_contents.extend(
        [b"a", b""]
    )
    response.outputs.add(name="u64", datatype="UINT64", shape=[1]).contents.uint64_contents.append(
        2**64 - 1
    )
    response.outputs.add(name="empty", datatype="FP64", shape=[0, 4])
    result = _codec.decode_response(response)
    assert result["i8"].dtype == np.int8 and result["i8"].tolist() == [-1, 0, 1]
    assert result["f"].dtype == np.float32 and result["f"].tolist() == [[0.5, 1.5]]
    assert result["b"].tolist() == [True, False]
    assert result["s"].tolist() == [b"a", b""]
    assert result["u64"].dtype == np.uint64 and int(result["u64"][0]) == 2**64 - 1
    assert result["empty"].shape == (0, 4)
    assert not result["f"].flags.writeable


def _bad_response(**output: Any) -> Any:
    response = pb.ModelInferResponse()
    raw = output.pop("raw", None)
    contents = output.pop("contents", None)
    tensor = response.outputs.add(name="y", **output)
    if raw is not None:
        response.raw_output_contents.append(raw)
    if contents is not None:
        getattr(tensor.contents, contents[0]).extend(contents[1])
    return response


@pytest.mark.parametrize(
    ("response", "match"),
    [
        (_bad_response(datatype="FP32", shape=[3], raw=b"\0" * 8), r"8 bytes .*\(expected 12\)"),
        (_bad_response(datatype="FP99", shape=[1], raw=b"\0"), "unknown datatype"),
        (_bad_response(datatype="FP32", shape=[-1], raw=b""), "negative"),
        (_bad_response(datatype="BYTES", shape=[2], raw=_length_prefixed(b"a")), "BYTES"),
        (_bad_response(datatype="FP16", shape=[1]), "no typed contents"),
        (_bad_response(datatype="INT32", shape=[2], contents=("int_contents", [1])), "1 values"),
        (_bad_response(datatype="INT8", shape=[1], contents=("int_contents", [300])), "range"),
    ],
    ids=["short-raw", "datatype", "shape", "bytes", "fp16-typed", "count", "overflow"],
)
def test_malformed_response_is_internal(response: Any, match: str) -> None:
    with pytest.raises(InferenceServerError, match=match) as info:
        _codec.decode_response(response)
    assert info.value.code == grpc.StatusCode.INTERNAL
    assert "output 'y'" in info.value.details


def test_raw_count_must_match_outputs() -> None:
    response = _response()
    response.raw_output_contents.append(b"")
    with pytest.raises(InferenceServerError, match="4 raw_output_contents for 3 outputs"):
        _codec.decode_response(response)


def test_decode_stream_response() -> None:
    ok = _codec.decode_stream_response(pb.ModelStreamInferResponse(infer_response=_response()))
    assert isinstance(ok, InferResult) and ok.id == "req-7"
    failed = _codec.decode_stream_response(
        pb.ModelStreamInferResponse(
            error_message="model 'x' is not known", infer_response=pb.ModelInferResponse(id="r9")
        )
    )
    assert isinstance(failed, InferenceServerError)
    assert failed.code == grpc.StatusCode.UNKNOWN and failed.request_id == "r9"
    assert str(failed) == "UNKNOWN: model 'x' is not known"


# --- errors, metadata, dicts ------------------------------------------------------------


class _FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


def test_error_conversion() -> None:
    err = from_rpc_error(_FakeRpcError(grpc.StatusCode.NOT_FOUND, "model 'x' is not known"))
    assert isinstance(err, InferenceServerError)
    assert err.code == grpc.StatusCode.NOT_FOUND
    assert err.details == "model 'x' is not known"
    assert str(err) == "NOT_FOUND: model 'x' is not known"
    bare = from_rpc_error(grpc.RpcError())
    assert bare.code == grpc.StatusCode.UNKNOWN and str(bare) == "UNKNOWN: UNKNOWN"


def test_metadata_merge() -> None:
    default = _codec.normalize_metadata([("Authorization", "Bearer old"), ("x-route", "a")])
    assert default == (("authorization", "Bearer old"), ("x-route", "a"))
    assert _codec.merge_metadata(default, ()) == default
    assert _codec.merge_metadata((), ()) is None
    merged = _codec.merge_metadata(default, [("authorization", "Bearer new"), ("x-extra", "1")])
    assert merged == (("x-route", "a"), ("authorization", "Bearer new"), ("x-extra", "1"))


def test_channel_options() -> None:
    opts = dict(_codec.channel_options(1024, ()))
    assert opts == {"grpc.max_send_message_length": 1024, "grpc.max_receive_message_length": 1024}
    opts = dict(_codec.channel_options(1024, [("grpc.max_receive_message_length", -1)]))
    assert opts["grpc.max_receive_message_length"] == -1
    assert opts["grpc.max_send_message_length"] == 1024


def test_message_to_dict_keeps_ints_and_names_enums() -> None:
    meta = pb.ModelMetadataResponse(name="m", versions=["1"])
    meta.inputs.add(name="pixels", datatype="FP32", shape=[-1, 64])
    assert _codec.message_to_dict(meta) == {
        "name": "m",
        "versions": ["1"],
        "platform": "",
        "inputs": [{"name": "pixels", "datatype": "FP32", "shape": [-1, 64]}],
        "outputs": [],
    }
    config = mc.ModelConfig(name="m", max_batch_size=8, metric_tags={"team": "ml"})
    config.input.add(name="pixels", data_type=mc.TYPE_FP32, dims=[64])
    config.parameters["k"].string_value = "v"
    as_dict = _codec.message_to_dict(config)
    assert as_dict["metric_tags"] == {"team": "ml"}
    assert as_dict["input"][0]["data_type"] == "TYPE_FP32"
    assert as_dict["input"][0]["dims"] == [64]
    assert as_dict["parameters"] == {"k": {"string_value": "v"}}
    assert as_dict["max_batch_size"] == 8
    assert "dynamic_batching" not in as_dict and "version_policy" not in as_dict


def test_metadata_to_dict_reads_the_model_card_from_the_reply_bytes() -> None:
    sent = with_model_card(pb.ModelMetadataResponse(name="m", versions=["1"]), {"owner": "ml"})
    received = pb.ModelMetadataResponse.FromString(sent.SerializeToString())
    assert _codec.metadata_to_dict(received) == {
        "name": "m",
        "versions": ["1"],
        "platform": "",
        "inputs": [],
        "outputs": [],
        "properties": {"owner": "ml"},
    }
    # A server without inferd's extension (stock Triton) sends no card.
    assert _codec.metadata_to_dict(pb.ModelMetadataResponse(name="m"))["properties"] == {}


# --- clients against an in-process echo servicer -------------------------------------


class _EchoServicer(pb_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    """Model "echo" returns its inputs; "slow" sleeps; anything else is NOT_FOUND.
    The caller's authorization header comes back as a response parameter."""

    def ServerLive(self, request: Any, context: Any) -> Any:
        return pb.ServerLiveResponse(live=True)

    def ModelReady(self, request: Any, context: Any) -> Any:
        return pb.ModelReadyResponse(ready=request.name == "echo")

    def RepositoryIndex(self, request: Any, context: Any) -> Any:
        response = pb.RepositoryIndexResponse()
        response.models.add(name="echo", version="1", state="READY")
        response.models.add(name="broken", version="2", state="UNAVAILABLE", reason="bad file")
        return response

    def ModelInfer(self, request: Any, context: Any) -> Any:
        if request.model_name == "slow":
            time.sleep(1.0)
        elif request.model_name != "echo":
            context.abort(grpc.StatusCode.NOT_FOUND, f"model '{request.model_name}' is not known")
        response = pb.ModelInferResponse(model_name="echo", model_version="1", id=request.id)
        headers = dict(context.invocation_metadata())
        response.parameters["auth"].string_param = headers.get("authorization", "")
        wanted = {o.name for o in request.outputs}
        for tensor, raw in zip(request.inputs, request.raw_input_contents, strict=True):
            if wanted and tensor.name not in wanted:
                continue
            response.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
            response.raw_output_contents.append(raw)
        return response

    def ModelStreamInfer(self, request_iterator: Any, context: Any) -> Any:
        for request in request_iterator:
            if request.model_name != "echo" or "fail" in request.id:
                yield pb.ModelStreamInferResponse(
                    error_message=f"request {request.id} failed",
                    infer_response=pb.ModelInferResponse(id=request.id),
                )
            else:
                yield pb.ModelStreamInferResponse(infer_response=self.ModelInfer(request, context))


@pytest.fixture(scope="module")
def echo_address() -> Iterator[str]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(_EchoServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(None)


def test_sync_client_round_trip_every_datatype(echo_address: str) -> None:
    with InferenceClient(echo_address, metadata=[("Authorization", "Bearer t")]) as client:
        assert client.is_server_live()
        assert client.is_model_ready("echo") and not client.is_model_ready("other")
        result = client.infer("echo", SAMPLES, request_id="abc")
        assert result.id == "abc" and result.parameters == {"auth": "Bearer t"}
        for name, array in SAMPLES.items():
            assert result[name].dtype == array.dtype, name
            assert result[name].shape == array.shape, name
            if name == "BYTES":
                assert result[name].tolist() == array.tolist()
            else:
                assert result[name].tobytes() == array.tobytes(), name
        # Per-call metadata replaces the client's entry for the same header.
        again = client.infer(
            "echo", {"x": np.zeros(1)}, outputs=["x"], metadata=[("authorization", "new")]
        )
        assert again.parameters == {"auth": "new"} and list(again) == ["x"]


def test_sync_client_errors(echo_address: str) -> None:
    with InferenceClient(echo_address) as client:
        with pytest.raises(InferenceServerError) as info:
            client.infer("nope", {"x": np.zeros(1)})
        assert info.value.code == grpc.StatusCode.NOT_FOUND
        assert str(info.value) == "NOT_FOUND: model 'nope' is not known"
        with pytest.raises(InferenceServerError) as info:
            client.infer("slow", {"x": np.zeros(1)}, timeout=0.05)
        assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        with pytest.raises(InferenceServerError) as info:
            client.server_metadata()  # not implemented by the fake
        assert info.value.code == grpc.StatusCode.UNIMPLEMENTED


def test_sync_stream(echo_address: str) -> None:
    requests = [(f"r{i}", {"x": np.full(2, i, np.int32)}) for i in range(3)]
    requests.insert(1, ("fail-1", {"x": np.zeros(1, np.int32)}))
    with InferenceClient(echo_address) as client:
        replies = list(client.stream_infer("echo", requests))
    assert [r.id if isinstance(r, InferResult) else r.request_id for r in replies] == [
        "r0",
        "fail-1",
        "r1",
        "r2",
    ]
    failed = replies[1]
    assert isinstance(failed, InferenceServerError)
    assert failed.code == grpc.StatusCode.UNKNOWN and failed.details == "request fail-1 failed"
    last = replies[3]
    assert isinstance(last, InferResult) and last["x"].tolist() == [2, 2]


def test_sync_stream_bad_item_raises_after_sent_replies(echo_address: str) -> None:
    def requests() -> Iterator[_codec.StreamItem]:
        yield "ok", {"x": np.zeros(1)}
        yield "bad", {"x": np.zeros(1, np.complex64)}

    replies = []
    with InferenceClient(echo_address) as client, pytest.raises(ValueError, match="complex"):
        for reply in client.stream_infer("echo", requests()):
            replies.append(reply)
    assert [r.id for r in replies if isinstance(r, InferResult)] == ["ok"]


async def test_async_client(echo_address: str) -> None:
    async with AsyncInferenceClient(echo_address, metadata=[("authorization", "a")]) as client:
        assert await client.is_server_live()
        index = await client.repository_index()
        assert index[1] == {
            "name": "broken",
            "version": "2",
            "state": "UNAVAILABLE",
            "reason": "bad file",
        }
        result = await client.infer("echo", {"x": SAMPLES["BF16"], "y": SAMPLES["BYTES"]})
        assert result["x"].dtype == ml_dtypes.bfloat16
        assert result["x"].tobytes() == SAMPLES["BF16"].tobytes()
        assert result["y"].tolist() == SAMPLES["BYTES"].tolist()
        assert result.parameters == {"auth": "a"}
        with pytest.raises(InferenceServerError) as info:
            await client.infer("nope", {"x": np.zeros(1)})
        assert info.value.code == grpc.StatusCode.NOT_FOUND
        with pytest.raises(InferenceServerError) as info:
            await client.infer("slow", {"x": np.zeros(1)}, timeout=0.05)
        assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_async_stream(echo_address: str) -> None:
    async def requests() -> AsyncIterator[_codec.StreamItem]:
        for rid in ("a", "fail-b", "c"):
            yield rid, {"x": np.array([1.5], np.float32)}

    async with AsyncInferenceClient(echo_address) as client:
        replies = [r async for r in client.stream_infer("echo", requests())]
        assert [type(r).__name__ for r in replies] == [
            "InferResult",
            "InferenceServerError",
            "InferResult",
        ]
        # A plain iterable works too.
        plain = [r async for r in client.stream_infer("echo", [("z", {"x": np.zeros(1)})])]
        assert isinstance(plain[0], InferResult) and plain[0].id == "z"


def test_unreachable_server_is_unavailable() -> None:
    client = InferenceClient(f"127.0.0.1:{_free_port()}")
    with client, pytest.raises(InferenceServerError) as info:
        client.is_server_live(timeout=10)
    assert info.value.code == grpc.StatusCode.UNAVAILABLE


# --- CLI ----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.parametrize(
    "argv",
    [
        ["m", "--input", "pixels"],
        ["m", "--input", "=x.npy"],
        ["m", "--input", "pixels="],
        ["m"],
        ["--input", "a=b.npy"],
        ["m", "--input", "a=b.npy", "--timeout", "soon"],
    ],
    ids=["no-equals", "no-name", "no-path", "no-input", "no-model", "bad-timeout"],
)
def test_cli_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert infer_main(argv) == 2
    assert "error:" in capsys.readouterr().err


def test_cli_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert infer_main(["--help"]) == 0
    assert "NAME=FILE.npy" in capsys.readouterr().out


def test_cli_unreadable_inputs_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.npy"
    assert infer_main(["m", "--input", f"pixels={missing}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: input 'pixels': cannot read") and err.count("\n") == 1

    garbage = tmp_path / "garbage.npy"
    garbage.write_bytes(b"not numpy")
    assert infer_main(["m", "--input", f"pixels={garbage}"]) == 2
    assert "cannot read" in capsys.readouterr().err

    pickled = tmp_path / "objects.npy"
    np.save(pickled, np.array([b"a"], dtype=object), allow_pickle=True)
    assert infer_main(["m", "--input", f"pixels={pickled}"]) == 2
    assert "cannot read" in capsys.readouterr().err

    archive = tmp_path / "arrays.npz"
    np.savez(archive, a=np.zeros(1))
    assert infer_main(["m", "--input", f"pixels={archive}"]) == 2
    assert ".npz" in capsys.readouterr().err

    ok = tmp_path / "ok.npy"
    np.save(ok, np.zeros(1))
    assert infer_main(["m", "-i", f"a={ok}", "-i", f"a={ok}"]) == 2
    assert "more than once" in capsys.readouterr().err

    complex_ = tmp_path / "complex.npy"
    np.save(complex_, np.zeros(1, np.complex64))
    assert infer_main(["m", "-i", f"a={complex_}", "--url", f"127.0.0.1:{_free_port()}"]) == 2
    assert "complex" in capsys.readouterr().err


def test_cli_server_errors_exit_1(
    echo_address: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "x.npy"
    np.save(path, np.zeros(2, np.float32))
    assert infer_main(["nope", "-i", f"x={path}", "--url", echo_address]) == 1
    assert capsys.readouterr().err == "error: NOT_FOUND: model 'nope' is not known\n"
    assert infer_main(["m", "-i", f"x={path}", "--url", f"127.0.0.1:{_free_port()}"]) == 1
    assert capsys.readouterr().err.startswith("error: UNAVAILABLE: ")
    assert models_main(["--url", f"127.0.0.1:{_free_port()}"]) == 1


def test_cli_infer_output(
    echo_address: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pixels, names = tmp_path / "p.npy", tmp_path / "n.npy"
    np.save(pixels, np.array([[0.5, 1.0]], np.float32))
    np.save(names, np.array(["héllo", "x"]))
    argv = ["echo", "-i", f"pixels={pixels}", "-i", f"names={names}", "--url", echo_address]
    assert infer_main([*argv, "--timeout", "10"]) == 0
    out = capsys.readouterr().out
    assert "pixels  FP32  [1, 2]" in out and "array([[0.5, 1. ]], dtype=float32)" in out
    assert "names  BYTES  [2]" in out

    assert infer_main([*argv, "--json", "--output", "names"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["outputs"] == {"names": {"datatype": "BYTES", "shape": [2], "data": ["héllo", "x"]}}
    assert doc["model_name"] == "echo"


def test_cli_models(echo_address: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert models_main(["--url", echo_address]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "VERSION", "STATE", "REASON"]
    assert lines[1].split() == ["echo", "1", "READY"]
    assert lines[2].split() == ["broken", "2", "UNAVAILABLE", "bad", "file"]
    assert models_main(["--url", echo_address, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["name"] == "echo"


def test_sync_stream_stopped_early_is_cancelled(echo_address: str) -> None:
    requests = ((f"r{i}", {"x": np.zeros(1)}) for i in range(10_000))
    with InferenceClient(echo_address) as client:
        stream = client.stream_infer("echo", requests)
        first = next(stream)
        stream.close()  # cancels the call; the client stays usable
        assert isinstance(first, InferResult) and first.id == "r0"
        assert client.is_server_live()


async def test_async_stream_stopped_early_is_cancelled(echo_address: str) -> None:
    requests = [(f"r{i}", {"x": np.zeros(1)}) for i in range(1_000)]
    async with AsyncInferenceClient(echo_address) as client:
        stream = client.stream_infer("echo", requests)
        async for reply in stream:
            assert isinstance(reply, InferResult) and reply.id == "r0"
            break
        await stream.aclose()
        assert await client.is_server_live()
