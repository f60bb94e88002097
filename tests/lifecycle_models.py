"""Real ONNX versions of one test model for lifecycle tests, and a test
identity interceptor.

Every version takes ``x`` FP32 [batch, 2] and answers ``y`` FP32 [batch, 2]:

- ``plus``: y = x + add (version N adds N, so an answer names its version);
- ``failing``: y = x + add, but the graph gathers from a 4-entry table at
  index ``x[:, 0]``, so ONNX Runtime fails the request when x[:, 0] >= 4;
- ``slow``: y = x + add after a chain of 1024x1024 matrix products that depend
  on the input (nothing to constant-fold): about 50 ms per call on one core.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from inferd.clients import InferenceClient, InferenceServerError
from inferd.server.identity import Principal, reset_principal, set_principal

CONFIG = """
name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: 8
input {{ name: "x" data_type: TYPE_FP32 dims: [ 2 ] }}
output {{ name: "y" data_type: TYPE_FP32 dims: [ 2 ] }}
parameters {{ key: "warmup_rounds" value {{ string_value: "1" }} }}
parameters {{ key: "intra_op_thread_count" value {{ string_value: "1" }} }}
{extra}
"""

#: Only version 1 is loaded by policy; the lifecycle state loads the rest.
ONLY_V1 = "version_policy { specific { versions: [ 1 ] } }"

#: A request every version answers.
X = np.array([[1.0, 2.0], [3.0, 0.5]], dtype=np.float32)
#: A request the failing version cannot answer (x[:, 0] >= 4).
X_FAILS = np.array([[5.0, 1.0]], dtype=np.float32)


def _io() -> tuple[onnx.ValueInfoProto, onnx.ValueInfoProto]:
    return (
        helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2]),
        helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2]),
    )


def _save(graph: onnx.GraphProto, path: Path) -> None:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    onnx.save(model, str(tmp))
    tmp.rename(path)  # as an operator should: never a half-written model.onnx


def plus(path: Path, add: float) -> None:
    x, y = _io()
    constant = numpy_helper.from_array(np.array(add, dtype=np.float32), "add")
    _save(
        helper.make_graph(
            [helper.make_node("Add", ["x", "add"], ["y"])], "plus", [x], [y], [constant]
        ),
        path,
    )


def failing(path: Path, add: float) -> None:
    x, y = _io()
    inits = [
        numpy_helper.from_array(np.array(add, dtype=np.float32), "add"),
        numpy_helper.from_array(np.zeros(4, dtype=np.float32), "table"),
        numpy_helper.from_array(np.array([0], dtype=np.int64), "start"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "end"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis"),
    ]
    nodes = [
        helper.make_node("Slice", ["x", "start", "end", "axis"], ["first"]),
        helper.make_node("Cast", ["first"], ["index"], to=TensorProto.INT64),
        helper.make_node("Gather", ["table", "index"], ["zero"], axis=0),  # [batch, 1]
        helper.make_node("Add", ["x", "add"], ["shifted"]),
        helper.make_node("Add", ["shifted", "zero"], ["y"]),
    ]
    _save(helper.make_graph(nodes, "failing", [x], [y], inits), path)


def slow(path: Path, add: float, products: int = 4, size: int = 1024) -> None:
    x, y = _io()
    inits = [
        numpy_helper.from_array(np.array(add, dtype=np.float32), "add"),
        numpy_helper.from_array(np.eye(size, dtype=np.float32), "eye"),
        numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"),
        numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one"),
    ]
    nodes = [
        # s = sum(x) * 0 + 1: a scalar from the input, so nothing folds away.
        helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0),
        helper.make_node("Mul", ["total", "zero"], ["nothing"]),
        helper.make_node("Add", ["nothing", "one"], ["s"]),
        helper.make_node("Mul", ["eye", "s"], ["m0"]),
    ]
    for i in range(products):
        nodes.append(helper.make_node("MatMul", [f"m{i}", "eye"], [f"m{i + 1}"]))
    nodes += [
        helper.make_node("ReduceSum", [f"m{products}"], ["trace"], keepdims=0),
        helper.make_node("Mul", ["trace", "zero"], ["also_nothing"]),
        helper.make_node("Add", ["x", "add"], ["shifted"]),
        helper.make_node("Add", ["shifted", "also_nothing"], ["y"]),
    ]
    _save(helper.make_graph(nodes, "slow", [x], [y], inits), path)


def broken(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this is not an onnx model")


def write_config(root: Path, name: str, extra: str = ONLY_V1) -> None:
    (root / name).mkdir(parents=True, exist_ok=True)
    (root / name / "config.pbtxt").write_text(CONFIG.format(name=name, extra=extra))


def rollout_repository(root: Path, name: str = "plus") -> Path:
    """v1 x+1 (champion), v2 x+2 (a good challenger), v3 failing, v4 slow,
    v5 not a model; only v1 loads by policy."""
    plus(root / name / "1" / "model.onnx", 1)
    plus(root / name / "2" / "model.onnx", 2)
    failing(root / name / "3" / "model.onnx", 3)
    slow(root / name / "4" / "model.onnx", 4)
    broken(root / name / "5" / "model.onnx")
    write_config(root, name)
    return root


def version_of(x: np.ndarray, y: np.ndarray) -> int:
    """Which version computed ``y`` from ``x`` (each adds its number)."""
    offsets = np.unique(np.round(y - x, 3))
    assert offsets.size == 1, offsets
    return int(offsets[0])


PRINCIPAL_HEADER = "x-test-principal"


class HeaderIdentity(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Test stand-in for the authentication layer: the principal named by the
    ``x-test-principal`` metadata entry (admin role) for the call."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        metadata = dict(details.invocation_metadata or ())  # type: ignore[attr-defined]
        name = metadata.get(PRINCIPAL_HEADER)
        if handler is None or not name or handler.unary_unary is None:
            return handler
        behavior = handler.unary_unary

        async def call(request: Any, context: Any) -> Any:
            token = set_principal(Principal(str(name), frozenset({"admin"})))
            try:
                return await behavior(request, context)
            finally:
                reset_principal(token)

        return grpc.unary_unary_rpc_method_handler(
            call,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def wait_for(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def audit(server: Any) -> list[dict[str, Any]]:
    """The server's audit log, oldest first (read in-process)."""
    assert server.server is not None
    entries = server.call(server.server.lifecycle.audit_entries())
    return [
        {
            "principal": e.principal,
            "action": e.action,
            "model": e.model,
            "after": json.loads(e.after),
        }
        for e in reversed(entries)
    ]


class Hammer:
    """Unversioned requests from several threads until stopped; counts
    every request sent, answered and failed, and the versions seen."""

    def __init__(self, address: str, name: str = "plus", threads: int = 4) -> None:
        self.address, self.name = address, name
        self.sent = self.answered = 0
        self.failures: list[str] = []
        self.versions: list[int] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]

    def _run(self) -> None:
        with InferenceClient(self.address) as client:
            while not self._stop.is_set():
                with self._lock:
                    self.sent += 1
                try:
                    result = client.infer(self.name, {"x": X}, timeout=30)
                except InferenceServerError as err:
                    with self._lock:
                        self.failures.append(str(err))
                    continue
                with self._lock:
                    self.answered += 1
                    self.versions.append(version_of(X, result["y"]))

    def __enter__(self) -> Hammer:
        for t in self._threads:
            t.start()
        wait_for(lambda: self.answered >= 20)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)
