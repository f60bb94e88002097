"""Python models in Triton's Python-backend format, written into a test
repository next to the ONNX ``plus`` model (y = x + 1, tests/lifecycle_models.py).

- ``pre``: pre-processing and an output mapping, as Triton's examples write
  them: standardizes ``RAW`` FP32 [4] per row, scores it against fixed
  weights (``SCORE`` FP32 [1]) and maps the score to a label (``LABEL``
  BYTES [1]); dtypes come from the config through ``get_output_config_by_name``
  and ``triton_string_to_numpy``.
- ``bls``: calls ``plus`` with its ``x`` (BLS ``exec``) and answers
  ``z`` = 2 * plus(x); ``missing_code`` is the TritonError code a call to a
  model that does not exist got back.
- ``bls_async``: the same with ``async def execute`` and ``async_exec``.
- ``faulty``: by ``mode`` (INT32 [1]) returns x, raises, or answers a wrong
  output name, dtype or shape; ``pid`` is its process id, ``requests`` how
  many requests its ``execute`` got; ``mode`` 7 sleeps 1 s, 9 sleeps
  ``SLEEP_S`` (writing ``executing`` into the model directory first) so a
  test can kill it mid-batch; finalize writes ``finalized``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from lifecycle_models import plus, write_config

WEIGHTS = np.array([0.5, -1.0, 2.0, 0.25], dtype=np.float32)
LABELS = (b"low", b"high")


def pre_reference(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What ``pre`` must answer, in numpy."""
    x = (raw - raw.mean(axis=1, keepdims=True)) / (raw.std(axis=1, keepdims=True) + 1e-6)
    score = (x * WEIGHTS).sum(axis=1, keepdims=True).astype(np.float32)
    label = np.array([[LABELS[int(s > 0)]] for s in score[:, 0]], dtype=object)
    return score, label


PRE_CONFIG = """
name: "pre"
backend: "python"
max_batch_size: 8
input [ { name: "RAW" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [
  { name: "SCORE" data_type: TYPE_FP32 dims: [ 1 ] },
  { name: "LABEL" data_type: TYPE_STRING dims: [ 1 ] }
]
dynamic_batching { }
"""

PRE_MODEL = """
import json

import numpy as np
import triton_python_backend_utils as pb_utils

WEIGHTS = np.array([0.5, -1.0, 2.0, 0.25], dtype=np.float32)


class TritonPythonModel:
    def initialize(self, args):
        self.model_config = json.loads(args["model_config"])
        score = pb_utils.get_output_config_by_name(self.model_config, "SCORE")
        label = pb_utils.get_output_config_by_name(self.model_config, "LABEL")
        self.score_dtype = pb_utils.triton_string_to_numpy(score["data_type"])
        self.label_dtype = pb_utils.triton_string_to_numpy(label["data_type"])
        self.labels = [b"low", b"high"]

    def execute(self, requests):
        responses = []
        for request in requests:
            raw = pb_utils.get_input_tensor_by_name(request, "RAW").as_numpy()
            x = (raw - raw.mean(axis=1, keepdims=True)) / (raw.std(axis=1, keepdims=True) + 1e-6)
            score = (x * WEIGHTS).sum(axis=1, keepdims=True).astype(self.score_dtype)
            label = np.array(
                [[self.labels[int(s > 0)]] for s in score[:, 0]], dtype=self.label_dtype
            )
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("SCORE", score), pb_utils.Tensor("LABEL", label)
                    ]
                )
            )
        return responses

    def finalize(self):
        pass
"""

BLS_CONFIG = """
name: "{name}"
backend: "python"
max_batch_size: 8
input [ {{ name: "x" data_type: TYPE_FP32 dims: [ 2 ] }} ]
output [
  {{ name: "z" data_type: TYPE_FP32 dims: [ 2 ] }},
  {{ name: "missing_code" data_type: TYPE_INT32 dims: [ 1 ] }}
]
dynamic_batching {{ }}
"""

BLS_MODEL = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "x").as_numpy()
            call = pb_utils.InferenceRequest(
                model_name="plus",
                requested_output_names=["y"],
                inputs=[pb_utils.Tensor("x", x)],
            )
            answer = call.exec()
            if answer.has_error():
                responses.append(pb_utils.InferenceResponse(error=answer.error()))
                continue
            y = pb_utils.get_output_tensor_by_name(answer, "y").as_numpy()
            missing = pb_utils.InferenceRequest(
                model_name="no_such_model", requested_output_names=["y"],
                inputs=[pb_utils.Tensor("x", x)],
            ).exec()
            code = np.full((x.shape[0], 1), missing.error().code(), dtype=np.int32)
            responses.append(pb_utils.InferenceResponse(
                [pb_utils.Tensor("z", y * 2), pb_utils.Tensor("missing_code", code)]
            ))
        return responses
"""

BLS_ASYNC_MODEL = """
import asyncio

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    async def execute(self, requests):
        calls = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "x").as_numpy()
            calls.append(pb_utils.InferenceRequest(
                model_name="plus", requested_output_names=["y"], inputs=[pb_utils.Tensor("x", x)]
            ).async_exec())
            calls.append(pb_utils.InferenceRequest(
                model_name="no_such_model", requested_output_names=["y"],
                inputs=[pb_utils.Tensor("x", x)],
            ).async_exec())
        answers = await asyncio.gather(*calls)
        responses = []
        for answer, missing in zip(answers[::2], answers[1::2]):
            y = pb_utils.get_output_tensor_by_name(answer, "y").as_numpy()
            code = np.full((y.shape[0], 1), missing.error().code(), dtype=np.int32)
            responses.append(pb_utils.InferenceResponse(
                [pb_utils.Tensor("z", y * 2), pb_utils.Tensor("missing_code", code)]
            ))
        return responses
"""

#: How long ``faulty`` sleeps in mode 9.
SLEEP_S = 30.0

FAULTY_CONFIG = """
name: "faulty"
backend: "python"
max_batch_size: 8
input [
  { name: "x" data_type: TYPE_FP32 dims: [ 2 ] },
  { name: "mode" data_type: TYPE_INT32 dims: [ 1 ] }
]
output [
  { name: "y" data_type: TYPE_FP32 dims: [ 2 ] },
  { name: "pid" data_type: TYPE_INT64 dims: [ 1 ] },
  { name: "requests" data_type: TYPE_INT32 dims: [ 1 ] }
]
dynamic_batching { }
"""

FAULTY_MODEL = """
import os
import time
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.directory = Path(args["model_repository"])

    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "x").as_numpy()
            mode = int(pb_utils.get_input_tensor_by_name(request, "mode").as_numpy()[0, 0])
            pid = np.full((x.shape[0], 1), os.getpid(), dtype=np.int64)
            count = np.full((x.shape[0], 1), len(requests), dtype=np.int32)
            if mode == 1:
                raise ValueError("cannot score /srv/secret/weights.bin")
            if mode == 9:
                (self.directory / "executing").write_text(str(os.getpid()))
                time.sleep(SLEEP_S)
            if mode == 7:
                time.sleep(1.0)
            outputs = {"y": x, "pid": pid, "requests": count}
            if mode == 2:
                outputs["nope"] = outputs.pop("y")
            elif mode == 3:
                outputs["y"] = x.astype(np.float64)
            elif mode == 4:
                outputs["y"] = x[:, :1]
            elif mode == 5:
                del outputs["y"]
            elif mode == 6:
                responses.append(pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(
                        "mode 6 is refused", pb_utils.TritonError.INVALID_ARG
                    )
                ))
                continue
            responses.append(pb_utils.InferenceResponse(
                [pb_utils.Tensor(k, v) for k, v in outputs.items()]
            ))
        return responses

    def finalize(self):
        (self.directory / "finalized").write_text("yes")
""".replace("SLEEP_S", repr(SLEEP_S))


#: ``echo``: no batching, any length; y = 2 * x (large tensors cross through shared memory).
ECHO_CONFIG = """
name: "echo"
backend: "python"
max_batch_size: 0
input [ { name: "x" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ -1 ] } ]
"""
ECHO_MODEL = """
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [
            pb_utils.InferenceResponse(
                [pb_utils.Tensor("y", pb_utils.get_input_tensor_by_name(r, "x").as_numpy() * 2)]
            )
            for r in requests
        ]
"""


def write_python_model(root: Path, name: str, config: str, source: str) -> None:
    (root / name / "1").mkdir(parents=True, exist_ok=True)
    (root / name / "config.pbtxt").write_text(config)
    (root / name / "1" / "model.py").write_text(source)


def python_repository(root: Path) -> Path:
    """``plus`` (ONNX) and the Python models above."""
    plus(root / "plus" / "1" / "model.onnx", 1)
    write_config(root, "plus", "dynamic_batching { }")
    write_python_model(root, "pre", PRE_CONFIG, PRE_MODEL)
    write_python_model(root, "bls", BLS_CONFIG.format(name="bls"), BLS_MODEL)
    write_python_model(root, "bls_async", BLS_CONFIG.format(name="bls_async"), BLS_ASYNC_MODEL)
    write_python_model(root, "faulty", FAULTY_CONFIG, FAULTY_MODEL)
    write_python_model(root, "echo", ECHO_CONFIG, ECHO_MODEL)
    return root
