"""Stock ``tritonclient.http`` (sync and aio) against inferd's HTTP/REST front
end: health, metadata, configuration, statistics, repository index, and
inference on every demo model with JSON and with binary tensors, whose
outputs must equal what gRPC answers for the same request."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.http as httpclient
import tritonclient.http.aio as aioclient
from conftest import ServerThread
from http_helpers import http_port, start_http_server
from tritonclient.utils import InferenceServerException

from inferd.protos import grpc_service_pb2 as pb
from inferd.protos import grpc_service_pb2_grpc as pb_grpc
from inferd.protos.datatypes import NUMPY_DTYPES, deserialize_bytes, serialize_bytes
from inferd.server.about import EXTENSIONS, SERVER_NAME, SERVER_VERSION

RNG = np.random.default_rng(7)

#: Per demo model: its inputs (name, datatype, array) for a batch of 3.
INPUTS: dict[str, list[tuple[str, str, np.ndarray]]] = {
    "digits_mlp": [("pixels", "FP32", RNG.random((3, 64), dtype=np.float32) * 16)],
    "text_stats": [
        ("token_ids", "INT64", RNG.integers(0, 1000, (3, 8), dtype=np.int64)),
        ("weights", "FP16", RNG.random((3, 8)).astype(np.float16)),
        ("tag", "BYTES", np.array([[b"a"], [b"bc"], ["d\u00e9".encode()]], dtype=object)),
    ],
    "dense_reference": [("x", "FP32", RNG.random((3, 1024), dtype=np.float32))],
}
OUTPUTS = {
    "digits_mlp": ("probabilities", "label"),
    "text_stats": ("id_sum", "weighted", "tag_echo"),
    "dense_reference": ("y",),
}


@pytest.fixture(autouse=True)
def _finalize_clients_on_this_thread() -> Iterator[None]:
    """A tritonclient.http client closes itself again when it is collected,
    which gevent allows only on this (the test's) thread: collect its garbage
    here rather than wherever the next collection happens to run (a server
    thread)."""
    yield
    gc.collect()


@pytest.fixture(scope="module")
def server(demo_repository: Path) -> Iterator[ServerThread]:
    # The control plane open, so the load below meets model control mode none.
    thread = start_http_server(demo_repository, allow_unauthenticated_admin=True)
    yield thread
    thread.stop()


@pytest.fixture(scope="module")
def client(server: ServerThread) -> Iterator[httpclient.InferenceServerClient]:
    c = httpclient.InferenceServerClient(f"127.0.0.1:{http_port(server)}")
    yield c
    c.close()


def grpc_outputs(server: ServerThread, model: str) -> dict[str, np.ndarray]:
    """The same request over gRPC, decoded."""
    msg = pb.ModelInferRequest(model_name=model)
    for name, datatype, array in INPUTS[model]:
        msg.inputs.add(name=name, datatype=datatype, shape=array.shape)
        raw = serialize_bytes(array) if datatype == "BYTES" else array.tobytes()
        msg.raw_input_contents.append(raw)
    with grpc.insecure_channel(server.address) as channel:
        reply = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(msg, timeout=30)
    out: dict[str, np.ndarray] = {}
    for tensor, raw in zip(reply.outputs, reply.raw_output_contents, strict=True):
        count = int(np.prod(tensor.shape))
        if tensor.datatype == "BYTES":
            array = deserialize_bytes(raw, count)
        else:
            array = np.frombuffer(raw, dtype=NUMPY_DTYPES[tensor.datatype])
        out[tensor.name] = array.reshape(tuple(tensor.shape))
    return out


def http_inputs(model: str, binary: bool) -> list[httpclient.InferInput]:
    inputs = []
    for name, datatype, array in INPUTS[model]:
        i = httpclient.InferInput(name, list(array.shape), datatype)
        i.set_data_from_numpy(array, binary_data=binary)
        inputs.append(i)
    return inputs


def as_bytes(array: np.ndarray) -> np.ndarray:
    """JSON BYTES come back as str in tritonclient; compare as bytes."""
    if array.dtype.kind in "OU":
        return np.vectorize(lambda v: v if isinstance(v, bytes) else v.encode())(array)
    return array


def test_health_and_server_metadata(client: httpclient.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("digits_mlp")
    assert client.is_model_ready("digits_mlp", "1")
    assert not client.is_model_ready("digits_mlp", "9")
    assert not client.is_model_ready("no_such_model")
    meta = client.get_server_metadata()
    assert meta == {"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": list(EXTENSIONS)}


@pytest.mark.parametrize("model", sorted(INPUTS))
def test_model_metadata_and_config(client: httpclient.InferenceServerClient, model: str) -> None:
    meta = client.get_model_metadata(model)
    assert meta["name"] == model and meta["versions"] == ["1"]
    assert meta["platform"] == "onnxruntime_onnx"
    assert [(t["name"], t["datatype"]) for t in meta["inputs"]] == [
        (n, d) for n, d, _ in INPUTS[model]
    ]
    assert [t["name"] for t in meta["outputs"]] == list(OUTPUTS[model])
    assert client.get_model_metadata(model, "1") == meta
    config = client.get_model_config(model)
    assert config["name"] == model
    # 64-bit integers are numbers, as Triton writes them (perf_analyzer reads them).
    assert isinstance(config["max_batch_size"], int) and config["max_batch_size"] > 0
    assert all(isinstance(d, int) for t in config["input"] for d in t["dims"])


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("model", sorted(INPUTS))
def test_infer_equals_grpc(
    server: ServerThread, client: httpclient.InferenceServerClient, model: str, binary: bool
) -> None:
    expected = grpc_outputs(server, model)
    requested = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in OUTPUTS[model]]
    result = client.infer(model, http_inputs(model, binary), outputs=requested, request_id="r-1")
    response = result.get_response()
    assert response["model_name"] == model and response["model_version"] == "1"
    assert response["id"] == "r-1"
    for name in OUTPUTS[model]:
        got = result.as_numpy(name)
        assert got is not None
        assert got.shape == expected[name].shape
        np.testing.assert_array_equal(as_bytes(got), expected[name])
        # JSON or binary as asked.
        assert ("binary_data_size" in (result.get_output(name).get("parameters") or {})) is binary


def test_infer_without_outputs_answers_all_binary(
    server: ServerThread, client: httpclient.InferenceServerClient
) -> None:
    # tritonclient then sends binary_data_output: true.
    result = client.infer("digits_mlp", http_inputs("digits_mlp", True))
    expected = grpc_outputs(server, "digits_mlp")
    for name in OUTPUTS["digits_mlp"]:
        np.testing.assert_array_equal(result.as_numpy(name), expected[name])
        assert result.get_output(name)["parameters"]["binary_data_size"] > 0


def test_classification_and_timeout_parameters(client: httpclient.InferenceServerClient) -> None:
    out = httpclient.InferRequestedOutput("probabilities", binary_data=False, class_count=3)
    result = client.infer(
        "digits_mlp", http_inputs("digits_mlp", True), outputs=[out], timeout=10**7
    )
    classes = result.as_numpy("probabilities")
    assert classes.shape == (3, 3)
    value, index = str(classes[0][0]).split(":")[:2]
    assert 0 <= int(index) < 10 and 0.0 <= float(value) <= 1.0


def test_statistics_and_repository_index(client: httpclient.InferenceServerClient) -> None:
    client.infer("digits_mlp", http_inputs("digits_mlp", True))
    stats = client.get_inference_statistics("digits_mlp")["model_stats"]
    assert [(s["name"], s["version"]) for s in stats] == [("digits_mlp", "1")]
    assert stats[0]["inference_count"] >= 3
    assert stats[0]["inference_stats"]["success"]["count"] >= 1
    everything = client.get_inference_statistics()["model_stats"]
    assert {s["name"] for s in everything} == set(INPUTS)
    index = client.get_model_repository_index()
    assert {(m["name"], m["state"]) for m in index} == {(m, "READY") for m in INPUTS}


def test_errors_reach_the_client_with_their_status(
    client: httpclient.InferenceServerClient,
) -> None:
    with pytest.raises(InferenceServerException) as info:
        client.get_model_metadata("no_such_model")
    assert info.value.status() == "404" or "404" in str(info.value)
    assert "no_such_model" in info.value.message()
    bad = httpclient.InferInput("pixels", [3, 63], "FP32")
    bad.set_data_from_numpy(np.zeros((3, 63), np.float32))
    with pytest.raises(InferenceServerException) as info:
        client.infer("digits_mlp", [bad])
    assert "400" in str(info.value) and "shape" in info.value.message()
    # The repository endpoints answer (model control mode none refuses loading).
    with pytest.raises(InferenceServerException) as info:
        client.load_model("digits_mlp")
    assert "load" in info.value.message()
    assert "authenticat" not in info.value.message()


async def test_aio_client(server: ServerThread) -> None:
    expected = grpc_outputs(server, "text_stats")
    client = aioclient.InferenceServerClient(f"127.0.0.1:{http_port(server)}")
    try:
        assert await client.is_server_live()
        assert await client.is_server_ready()
        assert await client.is_model_ready("text_stats")
        meta = await client.get_model_metadata("text_stats")
        assert meta["name"] == "text_stats"
        config = await client.get_model_config("text_stats")
        assert config["name"] == "text_stats"
        for binary in (True, False):
            inputs = []
            for name, datatype, array in INPUTS["text_stats"]:
                i = aioclient.InferInput(name, list(array.shape), datatype)
                i.set_data_from_numpy(array, binary_data=binary)
                inputs.append(i)
            outputs = [
                aioclient.InferRequestedOutput(n, binary_data=binary) for n in OUTPUTS["text_stats"]
            ]
            result = await client.infer("text_stats", inputs, outputs=outputs)
            for name in OUTPUTS["text_stats"]:
                np.testing.assert_array_equal(as_bytes(result.as_numpy(name)), expected[name])
        stats = await client.get_inference_statistics("text_stats")
        assert stats["model_stats"][0]["inference_count"] >= 6
    finally:
        await client.close()
