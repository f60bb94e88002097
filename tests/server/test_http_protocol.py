"""The HTTP/REST front end's JSON and binary shapes, with a plain HTTP client
(what curl sends), and the malformed-request table replayed over HTTP: every
bad request gets a clean 4xx with ``{"error": ...}`` naming the reason, and
the server keeps serving."""

from __future__ import annotations

import json
import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest
from conftest import ServerThread
from http_helpers import NUMERIC, all_types_model, http_port, request, start_http_server

from inferd.protos.datatypes import NUMPY_DTYPES

MAX_BODY = 256 << 10
INFER = "/v2/models/all_types/infer"

#: Three values per datatype, as JSON writes them.
VALUES: dict[str, list[Any]] = {
    "BOOL": [True, False, True],
    "INT8": [-128, 0, 127],
    "INT16": [-32768, 1, 32767],
    "INT32": [-(2**31), 2, 2**31 - 1],
    "INT64": [-(2**63), 3, 2**63 - 1],
    "UINT8": [0, 1, 255],
    "UINT16": [0, 2, 65535],
    "UINT32": [0, 3, 2**32 - 1],
    "UINT64": [0, 4, 2**64 - 1],
    "FP16": [0.5, -1.25, 65504.0],
    "BF16": [0.5, -1.25, 3.0],
    "FP32": [0.1, -2.5, 3.0e38],
    "FP64": [0.1, -2.5, 1.0e300],
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    repo = tmp_path_factory.mktemp("http") / "models"
    all_types_model(repo / "all_types" / "1" / "model.onnx")
    all_types_model(repo / "bytes_echo" / "1" / "model.onnx", ("BYTES",))
    thread = start_http_server(repo, max_message_bytes=MAX_BODY)
    yield thread
    thread.stop()


@pytest.fixture(scope="module")
def port(server: ServerThread) -> int:
    return http_port(server)


def json_inputs(nested: bool = False) -> list[dict[str, Any]]:
    return [
        {
            "name": f"in_{t}",
            "datatype": t,
            "shape": [1, 3],
            "data": [VALUES[t]] if nested else VALUES[t],
        }
        for t in NUMERIC
    ]


def good(port: int) -> None:
    """A well-formed request still gets its answer."""
    status, _, body = request(port, "POST", INFER, {"inputs": json_inputs()})
    assert status == 200, body
    assert len(json.loads(body)["outputs"]) == len(NUMERIC)


def binary_body(doc: dict[str, Any], blobs: list[bytes]) -> tuple[bytes, dict[str, str]]:
    header = json.dumps(doc).encode()
    return header + b"".join(blobs), {
        "Inference-Header-Content-Length": str(len(header)),
        "Content-Type": "application/octet-stream",
    }


@pytest.mark.parametrize("nested", [False, True], ids=["flat", "nested"])
def test_json_round_trip_of_every_datatype(port: int, nested: bool) -> None:
    doc = {"id": "req-7", "inputs": json_inputs(nested), "parameters": {"custom": "x"}}
    status, headers, body = request(port, "POST", INFER, doc)
    assert status == 200, body
    assert headers["Content-Type"].startswith("application/json")
    assert "Inference-Header-Content-Length" not in headers
    answer = json.loads(body)
    assert answer["model_name"] == "all_types" and answer["model_version"] == "1"
    assert answer["id"] == "req-7"
    by_name = {o["name"]: o for o in answer["outputs"]}
    for t in NUMERIC:
        out = by_name[f"out_{t}"]
        assert out["datatype"] == t and out["shape"] == [1, 3]
        # JSON carries the value the server's dtype holds (FP16, BF16 and FP32 round).
        expected = np.asarray(VALUES[t], dtype=NUMPY_DTYPES[t])
        np.testing.assert_array_equal(np.asarray(out["data"], dtype=expected.dtype), expected)


def test_binary_round_trip_of_every_datatype(port: int) -> None:
    arrays = {t: np.asarray([VALUES[t]], dtype=NUMPY_DTYPES[t]) for t in NUMERIC}
    blobs = [arrays[t].tobytes() for t in NUMERIC]
    doc = {
        "inputs": [
            {
                "name": f"in_{t}",
                "datatype": t,
                "shape": [1, 3],
                "parameters": {"binary_data_size": len(b)},
            }
            for t, b in zip(NUMERIC, blobs, strict=True)
        ],
        "outputs": [
            {"name": f"out_{t}", "parameters": {"binary_data": t != "FP64"}} for t in NUMERIC
        ],
    }
    body, headers = binary_body(doc, blobs)
    status, answer_headers, answer = request(port, "POST", INFER, body, headers)
    assert status == 200, answer
    length = int(answer_headers["Inference-Header-Content-Length"])
    header = json.loads(answer[:length])
    data = answer[length:]
    offset = 0
    for out, t in zip(header["outputs"], NUMERIC, strict=True):
        assert out["name"] == f"out_{t}"
        if t == "FP64":  # asked for as JSON
            assert out["data"] == VALUES[t] and "parameters" not in out
            continue
        size = out["parameters"]["binary_data_size"]
        got = np.frombuffer(data[offset : offset + size], dtype=NUMPY_DTYPES[t])
        offset += size
        np.testing.assert_array_equal(got.reshape(1, 3), arrays[t])
    assert offset == len(data)


def test_bytes_as_strings_and_as_binary(port: int) -> None:
    texts = ["plain", "caf\u00e9", ""]
    doc = {"inputs": [{"name": "in_BYTES", "datatype": "BYTES", "shape": [1, 3], "data": texts}]}
    status, _, body = request(port, "POST", "/v2/models/bytes_echo/infer", doc)
    assert status == 200, body
    assert json.loads(body)["outputs"][0]["data"] == texts
    raw = b"".join(struct.pack("<I", len(t.encode())) + t.encode() for t in texts)
    doc = {
        "inputs": [
            {
                "name": "in_BYTES",
                "datatype": "BYTES",
                "shape": [1, 3],
                "parameters": {"binary_data_size": len(raw)},
            }
        ],
        "parameters": {"binary_data_output": True},
    }
    body, headers = binary_body(doc, [raw])
    status, answer_headers, answer = request(
        port, "POST", "/v2/models/bytes_echo/versions/1/infer", body, headers
    )
    assert status == 200, answer
    length = int(answer_headers["Inference-Header-Content-Length"])
    assert json.loads(answer[:length])["outputs"][0]["parameters"]["binary_data_size"] == len(raw)
    assert answer[length:] == raw


def test_bf16_binary_is_two_bytes_per_element(port: int) -> None:
    values = np.asarray([[1.5, -2.0, 0.25]], dtype=ml_dtypes.bfloat16)
    doc = {
        "inputs": [
            {**i, "data": VALUES[i["datatype"]]} if i["datatype"] != "BF16" else i
            for i in json_inputs()
        ]
    }
    bf16 = next(i for i in doc["inputs"] if i["datatype"] == "BF16")
    del bf16["data"]
    bf16["parameters"] = {"binary_data_size": 6}
    doc["outputs"] = [{"name": "out_BF16", "parameters": {"binary_data": True}}]
    body, headers = binary_body(doc, [values.tobytes()])
    status, answer_headers, answer = request(port, "POST", INFER, body, headers)
    assert status == 200, answer
    length = int(answer_headers["Inference-Header-Content-Length"])
    assert answer[length:] == values.tobytes()


def test_health_and_metadata_shapes(port: int) -> None:
    assert request(port, "GET", "/v2/health/live")[0] == 200
    assert request(port, "GET", "/v2/health/ready")[0] == 200
    assert request(port, "GET", "/v2/models/all_types/ready")[0] == 200
    assert request(port, "GET", "/v2/models/all_types/versions/1/ready")[0] == 200
    assert request(port, "GET", "/v2/models/nope/ready")[0] == 503
    status, _, body = request(port, "GET", "/v2/models/all_types/versions/1")
    meta = json.loads(body)
    assert status == 200 and meta["inputs"][0] == {
        "name": "in_BOOL",
        "datatype": "BOOL",
        "shape": [-1, 3],
    }
    status, _, body = request(port, "POST", "/v2/repository/index", {"ready": True})
    assert status == 200
    assert {m["name"] for m in json.loads(body)} == {"all_types", "bytes_echo"}


# -- the malformed-request table ----------------------------------------------------------


def _doc(**changes: Any) -> dict[str, Any]:
    inputs = json_inputs()
    doc: dict[str, Any] = {"inputs": inputs}
    first = inputs[0]
    for key, value in changes.items():
        if key.startswith("in_"):
            first[key[3:]] = value
        else:
            doc[key] = value
    return doc


def _binary(size: int, blob: bytes, header_length: int | None = None) -> tuple[bytes, dict]:
    doc = {
        "inputs": [
            {
                "name": "in_UINT8",
                "datatype": "UINT8",
                "shape": [1, 3],
                "parameters": {"binary_data_size": size},
            }
        ]
    }
    body, headers = binary_body(doc, [blob])
    if header_length is not None:
        headers["Inference-Header-Content-Length"] = str(header_length)
    return body, headers


def _one_type(datatype: str, data: Any, shape: list[int] | None = None) -> dict[str, Any]:
    inputs = json_inputs()
    for i in inputs:
        if i["datatype"] == datatype:
            i["data"] = data
            if shape is not None:
                i["shape"] = shape
    return {"inputs": inputs}


ROWS: list[tuple[str, str, str, Any, dict[str, str] | None, int, str]] = [
    # (id, method, path, body, headers, status, reason in the message)
    ("bad-json", "POST", INFER, b"{not json", None, 400, "not valid JSON"),
    ("json-not-object", "POST", INFER, b"[1, 2]", None, 400, "JSON object"),
    ("empty-body", "POST", INFER, b"", None, 400, "not valid JSON"),
    ("no-inputs", "POST", INFER, {"inputs": []}, None, 400, "inputs"),
    ("input-not-object", "POST", INFER, {"inputs": [3]}, None, 400, "JSON object"),
    ("shape-not-ints", "POST", INFER, _doc(in_shape=["1", 3]), None, 400, "shape"),
    ("wrong-rank", "POST", INFER, _doc(in_shape=[3]), None, 400, "rank"),
    ("wrong-shape", "POST", INFER, _doc(in_shape=[1, 4]), None, 400, "shape"),
    ("negative-dim", "POST", INFER, _doc(in_shape=[-1, 3]), None, 400, "negative"),
    ("wrong-datatype", "POST", INFER, _doc(in_datatype="FP32"), None, 400, "datatype"),
    ("unknown-input", "POST", INFER, _doc(in_name="nope"), None, 400, "unknown input"),
    ("missing-data", "POST", INFER, _doc(in_data=None), None, 400, "data"),
    ("count-mismatch", "POST", INFER, _one_type("INT32", [1, 2]), None, 400, "elements"),
    ("ragged", "POST", INFER, _one_type("INT32", [[1, 2], [3]], [1, 3]), None, 400, "ragged"),
    ("string-for-fp32", "POST", INFER, _one_type("FP32", ["a", "b", "c"]), None, 400, "numbers"),
    ("float-for-int", "POST", INFER, _one_type("INT64", [1.5, 2, 3]), None, 400, "integers"),
    ("int8-range", "POST", INFER, _one_type("INT8", [1, 2, 300]), None, 400, "out of range"),
    ("uint-negative", "POST", INFER, _one_type("UINT8", [-1, 2, 3]), None, 400, "out of range"),
    ("bool-as-int", "POST", INFER, _one_type("BOOL", [1, 0, 1]), None, 400, "true or false"),
    (
        "bytes-not-string",
        "POST",
        "/v2/models/bytes_echo/infer",
        {"inputs": [{"name": "in_BYTES", "datatype": "BYTES", "shape": [1, 3], "data": [1, 2, 3]}]},
        None,
        400,
        "strings",
    ),
    (
        "unknown-output",
        "POST",
        INFER,
        _doc(outputs=[{"name": "nope"}]),
        None,
        400,
        "unknown output",
    ),
    (
        "classification-not-int",
        "POST",
        INFER,
        _doc(outputs=[{"name": "out_FP32", "parameters": {"classification": "2"}}]),
        None,
        400,
        "classification",
    ),
    (
        "binary-data-not-bool",
        "POST",
        INFER,
        _doc(outputs=[{"name": "out_FP32", "parameters": {"binary_data": 1}}]),
        None,
        400,
        "binary_data",
    ),
    ("timeout-negative", "POST", INFER, _doc(parameters={"timeout": -1}), None, 400, "timeout"),
    ("timeout-string", "POST", INFER, _doc(parameters={"timeout": "10"}), None, 400, "timeout"),
    ("param-object", "POST", INFER, _doc(parameters={"x": {"y": 1}}), None, 400, "parameter"),
    ("id-not-string", "POST", INFER, _doc(id=7), None, 400, "'id'"),
    (
        "over-element-limit",
        "POST",
        INFER,
        _one_type("FP64", [1.0], [2**40, 3]),
        None,
        429,
        "limit",
    ),
    ("header-length-past-body", "POST", INFER, *_binary(3, b"abc", 10**6), 400, "outside"),
    ("header-length-zero", "POST", INFER, *_binary(3, b"abc", 0), 400, "outside"),
    (
        "header-length-text",
        "POST",
        INFER,
        b"{}",
        {"Inference-Header-Content-Length": "x"},
        400,
        "integer",
    ),
    ("binary-size-past-data", "POST", INFER, *_binary(4, b"abc"), 400, "runs past"),
    ("binary-leftover", "POST", INFER, *_binary(2, b"abc"), 400, "add up"),
    ("binary-size-for-shape", "POST", INFER, *_binary(0, b""), 400, "needs"),
    ("unknown-model", "POST", "/v2/models/nope/infer", _doc(), None, 404, "nope"),
    ("unknown-version", "POST", "/v2/models/all_types/versions/9/infer", _doc(), None, 404, "9"),
    ("unknown-model-metadata", "GET", "/v2/models/nope", None, None, 404, "nope"),
    ("unknown-path", "GET", "/v3/whatever", None, None, 404, "Not Found"),
    ("wrong-method", "GET", INFER, None, None, 405, "Method Not Allowed"),
    ("index-bad-json", "POST", "/v2/repository/index", b"{", None, 400, "not valid JSON"),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status", "reason"),
    [r[1:] for r in ROWS],
    ids=[r[0] for r in ROWS],
)
def test_malformed_request(
    port: int,
    method: str,
    path: str,
    body: Any,
    headers: dict[str, str] | None,
    status: int,
    reason: str,
) -> None:
    got, answer_headers, answer = request(port, method, path, body, headers)
    assert got == status, answer
    assert answer_headers["Content-Type"].startswith("application/json")
    message = json.loads(answer)["error"]
    assert reason in message, message
    if status == 405:
        assert answer_headers["Allow"] == "POST"
    assert "Traceback" not in message and ".py" not in message and "/tmp" not in message
    good(port)


def _raw_exchange(port: int, head: bytes, body: bytes = b"", *, shut: bool = False) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + body)
        if shut:
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            if b"\r\n\r\n" in b"".join(chunks) and not shut:
                break
        return b"".join(chunks)


def test_oversized_body_is_refused_before_it_is_read(port: int) -> None:
    # Only the headers are sent: the answer cannot have waited for the body.
    head = (
        f"POST {INFER} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {10**9}\r\n\r\n"
    ).encode()
    answer = _raw_exchange(port, head)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"over the limit" in answer
    good(port)


def test_oversized_chunked_body_is_cut_off(port: int) -> None:
    chunk = b"x" * (64 << 10)
    body = b"".join(b"%x\r\n" % len(chunk) + chunk + b"\r\n" for _ in range(8)) + b"0\r\n\r\n"
    head = (
        f"POST {INFER} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    answer = _raw_exchange(port, head, body, shut=True)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    good(port)


def test_content_length_lies(port: int) -> None:
    payload = json.dumps({"inputs": json_inputs()}).encode()
    # Shorter than the body: the JSON is cut (400 naming it); the rest of the
    # body then arrives as no request at all, and the connection is closed.
    half = len(payload) // 2
    head = f"POST {INFER} HTTP/1.1\r\nHost: x\r\nContent-Length: {half}\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + payload[:half])
        answer = b""
        while b"not valid JSON" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
        assert b"not valid JSON" in answer
        sock.sendall(payload[half:])
    # Longer than the body, then the client gives up: nothing to answer, no harm done.
    head = (
        f"POST {INFER} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(payload) + 100}\r\n\r\n"
    ).encode()
    _raw_exchange(port, head, payload, shut=True)
    good(port)


def test_server_metadata_lists_binary_tensor_data(port: int) -> None:
    status, _, body = request(port, "GET", "/v2")
    assert status == 200
    assert "binary_tensor_data" in json.loads(body)["extensions"]


def test_http_off_by_default_for_embedded_servers(demo_repository: Path) -> None:
    from inferd.server.app import ServerConfig

    config = ServerConfig(model_repository=demo_repository)
    assert config.allow_http is False and config.http_port == 8000
