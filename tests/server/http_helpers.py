"""Shared by the HTTP/REST front end's tests: servers with HTTP on, a model
with an input and output of every datatype, and a raw HTTP client."""

from __future__ import annotations

import http.client
import json
from pathlib import Path
from typing import Any

import onnx
from conftest import ServerThread
from onnx import TensorProto, helper

from inferd.server.app import ServerConfig

#: V2 datatype -> ONNX element type, for every datatype the protocol has.
ONNX_TYPES = {
    "BOOL": TensorProto.BOOL,
    "INT8": TensorProto.INT8,
    "INT16": TensorProto.INT16,
    "INT32": TensorProto.INT32,
    "INT64": TensorProto.INT64,
    "UINT8": TensorProto.UINT8,
    "UINT16": TensorProto.UINT16,
    "UINT32": TensorProto.UINT32,
    "UINT64": TensorProto.UINT64,
    "FP16": TensorProto.FLOAT16,
    "BF16": TensorProto.BFLOAT16,
    "FP32": TensorProto.FLOAT,
    "FP64": TensorProto.DOUBLE,
    "BYTES": TensorProto.STRING,
}


#: onnxruntime's Python API cannot run BF16 beside BYTES inputs: two models.
NUMERIC = tuple(t for t in ONNX_TYPES if t != "BYTES")


def all_types_model(path: Path, types: tuple[str, ...] = NUMERIC) -> None:
    """``in_<TYPE>`` [-1, 3] -> ``out_<TYPE>`` unchanged, for each of ``types``."""
    inputs, outputs, nodes = [], [], []
    for name in types:
        kind = ONNX_TYPES[name]
        inputs.append(helper.make_tensor_value_info(f"in_{name}", kind, ["b", 3]))
        outputs.append(helper.make_tensor_value_info(f"out_{name}", kind, ["b", 3]))
        nodes.append(helper.make_node("Identity", [f"in_{name}"], [f"out_{name}"]))
    graph = helper.make_graph(nodes, "all_types", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True)
    onnx.save(model, str(path))


def start_http_server(repository: Path, **options: Any) -> ServerThread:
    options.setdefault("grpc_port", 0)
    config = ServerConfig(model_repository=repository, allow_http=True, http_port=0, **options)
    return ServerThread(config).start()


def http_port(server: ServerThread) -> int:
    assert server.server is not None
    return server.server.http_port


def request(
    port: int,
    method: str,
    path: str,
    body: bytes | dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One plain HTTP/1.1 request; returns (status, headers, body)."""
    if isinstance(body, dict):
        body = json.dumps(body).encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()
