"""BLS from Python models: the caller's remaining deadline travels with the
call, and the callee's refusals come back as the response's TritonError."""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import ServerThread
from python_models import python_repository, write_python_model

from inferd.clients import InferenceClient

RELAY_CONFIG = """
name: "relay"
backend: "python"
max_batch_size: 8
input [ { name: "x" data_type: TYPE_FP32 dims: [ 2 ] } ]
output [
  { name: "y" data_type: TYPE_FP32 dims: [ 2 ] },
  { name: "error" data_type: TYPE_STRING dims: [ 1 ] },
  { name: "code" data_type: TYPE_INT32 dims: [ 1 ] }
]
"""
#: Calls ``faulty`` (mode 0: y = x) or, for x[0, 0] < 0, ``plus`` with a
#: wrong input name; reports the callee's error message and code.
RELAY_MODEL = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "x").as_numpy()
            if x[0, 0] < 0:
                call = pb_utils.InferenceRequest(
                    model_name="plus", requested_output_names=["y"],
                    inputs=[pb_utils.Tensor("wrong", x)],
                )
            else:
                mode = np.zeros((x.shape[0], 1), dtype=np.int32)
                call = pb_utils.InferenceRequest(
                    model_name="faulty", requested_output_names=["y"],
                    inputs=[pb_utils.Tensor("x", x), pb_utils.Tensor("mode", mode)],
                )
            answer = call.exec()
            rows = x.shape[0]
            if answer.has_error():
                y = np.zeros_like(x)
                text, code = answer.error().message(), answer.error().code()
            else:
                y = pb_utils.get_output_tensor_by_name(answer, "y").as_numpy()
                text, code = "", -1
            responses.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("y", y),
                pb_utils.Tensor("error", np.array([[text.encode()]] * rows, dtype=object)),
                pb_utils.Tensor("code", np.full((rows, 1), code, dtype=np.int32)),
            ]))
        return responses
"""
X = np.array([[1.0, 2.0]], dtype=np.float32)
INVALID_ARG = 3  # pb_utils.TritonError.INVALID_ARG


def _server(make_server: Callable[..., ServerThread], tmp_path: Path) -> ServerThread:
    root = python_repository(tmp_path / "models")
    write_python_model(root, "relay", RELAY_CONFIG, RELAY_MODEL)
    return make_server(root)


def test_bls_call_inherits_the_callers_remaining_deadline(
    make_server: Callable[..., ServerThread], tmp_path: Path
) -> None:
    """While ``faulty`` is busy for 1 s, a relay request with a 0.3 s budget
    (Triton's ``timeout`` parameter) gets its BLS call refused for lack of
    time; the same call without a budget waits and succeeds."""
    server = _server(make_server, tmp_path)
    busy = {"x": X, "mode": np.full((1, 1), 7, dtype=np.int32)}
    with (
        InferenceClient(server.address) as client,
        concurrent.futures.ThreadPoolExecutor(2) as pool,
    ):
        slow = pool.submit(client.infer, "faulty", busy, timeout=30)
        time.sleep(0.2)
        hurried = client.infer("relay", {"x": X}, parameters={"timeout": 300_000}, timeout=30)
        slow.result()
        slow = pool.submit(client.infer, "faulty", busy, timeout=30)
        time.sleep(0.2)
        patient = client.infer("relay", {"x": X}, timeout=30)
        slow.result()
    assert hurried["code"][0, 0] != -1
    assert "deadline" in hurried["error"][0, 0].decode().lower()
    assert patient["code"][0, 0] == -1
    np.testing.assert_array_equal(patient["y"], X)


def test_bls_call_with_bad_inputs_gets_invalid_arg(
    make_server: Callable[..., ServerThread], tmp_path: Path
) -> None:
    server = _server(make_server, tmp_path)
    with InferenceClient(server.address) as client:
        answer = client.infer("relay", {"x": -X}, timeout=30)
    assert answer["code"][0, 0] == INVALID_ARG
    assert "unknown input 'wrong'" in answer["error"][0, 0].decode()


def test_bls_model_with_inline_dispatch_still_answers(
    make_server: Callable[..., ServerThread], tmp_path: Path
) -> None:
    """``inline_max_us`` runs fast batches on the event loop; a Python model's
    batch must not, or its BLS call would wait for the loop it blocks."""
    root = python_repository(tmp_path / "models")
    inline = RELAY_CONFIG + 'parameters { key: "inline_max_us" value { string_value: "10000" } }\n'
    write_python_model(root, "relay", inline, RELAY_MODEL)
    server = make_server(root)
    with InferenceClient(server.address) as client:
        for _ in range(3):  # the first batch seeds the latency model; later ones could inline
            answer = client.infer("relay", {"x": X}, timeout=30)
            np.testing.assert_array_equal(answer["y"], X)


TEXT_CONFIG = """
name: "{name}"
backend: "python"
max_batch_size: 8
input [ {{ name: "t" data_type: TYPE_STRING dims: [ 1 ] }} ]
output [ {{ name: "u" data_type: TYPE_STRING dims: [ 1 ] }} ]
"""
UPPER_MODEL = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            t = pb_utils.get_input_tensor_by_name(request, "t").as_numpy()
            assert all(isinstance(v, bytes) for v in t.ravel()), "BYTES arrive as bytes"
            u = np.vectorize(lambda v: v.upper(), otypes=[object])(t)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("u", u)]))
        return responses
"""
#: Hands ``upper`` its text as Python str objects, as model code often has it.
TEXT_RELAY_MODEL = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            t = pb_utils.get_input_tensor_by_name(request, "t").as_numpy()
            text = np.vectorize(lambda v: v.decode(), otypes=[object])(t)
            answer = pb_utils.InferenceRequest(
                model_name="upper", requested_output_names=["u"],
                inputs=[pb_utils.Tensor("t", text)],
            ).exec()
            if answer.has_error():
                responses.append(pb_utils.InferenceResponse(error=answer.error()))
                continue
            u = pb_utils.get_output_tensor_by_name(answer, "u").as_numpy()
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("u", u)]))
        return responses
"""


def test_bls_text_as_str_reaches_the_callee_as_bytes(
    make_server: Callable[..., ServerThread], tmp_path: Path
) -> None:
    root = python_repository(tmp_path / "models")
    write_python_model(root, "upper", TEXT_CONFIG.format(name="upper"), UPPER_MODEL)
    write_python_model(root, "text_relay", TEXT_CONFIG.format(name="text_relay"), TEXT_RELAY_MODEL)
    server = make_server(root)
    text = np.array([[b"caf\xc3\xa9"], [b"abc"]], dtype=object)
    with InferenceClient(server.address) as client:
        answer = client.infer("text_relay", {"t": text}, timeout=30)
    assert answer["u"].tolist() == [[b"CAF\xc3\xa9"], [b"ABC"]]  # bytes.upper: ASCII only


async def test_bls_reaches_a_data_plane_built_after_the_model_loaded(tmp_path: Path) -> None:
    """The data plane binds its entry when it is built, like the ensembles'
    steps: a Python model loaded before that still reaches it at call time."""
    from inferd.server.dataplane import DataPlane
    from inferd.server.errors import Unavailable
    from inferd.server.model_io import ModelIO
    from inferd.server.models import ModelManager
    from inferd.server.repository import ModelRepository
    from inferd.server.request import InferRequest

    models = ModelManager(ModelRepository(python_repository(tmp_path / "models")))
    try:
        await models.load("plus")
        await models.load("bls")
        # Until a data plane binds the link, the BLS call is refused UNAVAILABLE.
        with pytest.raises(Unavailable, match="BLS calls are not available: no data plane"):
            await models.resolve("bls").scheduler.submit(InferRequest({"x": X}, (), 1))
        plane = DataPlane(models)

        def decode(io: ModelIO) -> InferRequest:
            return InferRequest({"x": X}, (), 1)

        answer = await plane.infer("bls", "", decode)
        np.testing.assert_allclose(answer.outputs["z"], (X + 1) * 2)
    finally:
        await models.close()
