"""A pre -> ONNX -> post ensemble whose pre and post steps are Python models
in Triton's Python-backend format, and a cached Python model that counts its
executions; written into a test repository.

- ``standardize`` (Python): ``RAW`` FP32 [4] -> ``X`` FP32 [4], each row
  standardized (zero mean, unit deviation).
- ``scale`` (ONNX, tests/ensemble_models.py): y = 3 * x.
- ``label`` (Python): ``Y`` FP32 [4] -> ``SCORE`` FP32 [1] (Y against fixed
  weights) and ``LABEL`` BYTES [1] (the score mapped to a label, as Triton's
  examples map scores to class names); a non-finite score raises ValueError.
- ``pipeline`` (ensemble): RAW -> standardize -> scale -> label -> SCORE, LABEL.
- ``tally`` (Python, ``response_cache { enable: true }``): y = 2 * x, and
  ``calls`` INT32 [1] = requests its execute has seen so far; each also
  appends a line to ``executions`` in the model's directory.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ensemble_models import step, write_model
from python_models import write_python_model

WEIGHTS = np.array([0.5, -1.0, 2.0, 0.25], dtype=np.float32)
LABELS = (b"negative", b"positive")


def pipeline_reference(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What ``pipeline`` must answer for ``raw``, in numpy."""
    x = (raw - raw.mean(axis=1, keepdims=True)) / (raw.std(axis=1, keepdims=True) + 1e-6)
    y = x.astype(np.float32) * np.float32(3)
    score = (y * WEIGHTS).sum(axis=1, keepdims=True).astype(np.float32)
    label = np.array([[LABELS[int(s > 0)]] for s in score[:, 0]], dtype=object)
    return score, label


STANDARDIZE_CONFIG = """
name: "standardize"
backend: "python"
max_batch_size: 8
input [ { name: "RAW" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "X" data_type: TYPE_FP32 dims: [ 4 ] } ]
dynamic_batching { }
"""

STANDARDIZE_MODEL = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            raw = pb_utils.get_input_tensor_by_name(request, "RAW").as_numpy()
            x = (raw - raw.mean(axis=1, keepdims=True)) / (raw.std(axis=1, keepdims=True) + 1e-6)
            x = pb_utils.Tensor("X", x.astype(np.float32))
            responses.append(pb_utils.InferenceResponse([x]))
        return responses
"""

LABEL_CONFIG = """
name: "label"
backend: "python"
max_batch_size: 8
input [ { name: "Y" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [
  { name: "SCORE" data_type: TYPE_FP32 dims: [ 1 ] },
  { name: "LABEL" data_type: TYPE_STRING dims: [ 1 ] }
]
parameters { key: "labels" value { string_value: "negative,positive" } }
dynamic_batching { }
"""

LABEL_MODEL = """
import json

import numpy as np
import triton_python_backend_utils as pb_utils

WEIGHTS = np.array([0.5, -1.0, 2.0, 0.25], dtype=np.float32)


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        labels = config["parameters"]["labels"]["string_value"].split(",")
        self.labels = [name.encode() for name in labels]
        label = pb_utils.get_output_config_by_name(config, "LABEL")
        self.label_dtype = pb_utils.triton_string_to_numpy(label["data_type"])

    def execute(self, requests):
        responses = []
        for request in requests:
            y = pb_utils.get_input_tensor_by_name(request, "Y").as_numpy()
            score = (y * WEIGHTS).sum(axis=1, keepdims=True).astype(np.float32)
            if not np.isfinite(score).all():
                raise ValueError("cannot label a non-finite score")
            label = np.array(
                [[self.labels[int(s > 0)]] for s in score[:, 0]], dtype=self.label_dtype
            )
            responses.append(pb_utils.InferenceResponse(
                [pb_utils.Tensor("SCORE", score), pb_utils.Tensor("LABEL", label)]
            ))
        return responses
"""

PIPELINE_CONFIG = """
name: "pipeline"
platform: "ensemble"
max_batch_size: 8
input [ { name: "RAW" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [
  { name: "SCORE" data_type: TYPE_FP32 dims: [ 1 ] },
  { name: "LABEL" data_type: TYPE_STRING dims: [ 1 ] }
]
ensemble_scheduling {
  STEPS
}
"""

TALLY_CONFIG = """
name: "tally"
backend: "python"
max_batch_size: 8
input [ { name: "x" data_type: TYPE_FP32 dims: [ 2 ] } ]
output [
  { name: "y" data_type: TYPE_FP32 dims: [ 2 ] },
  { name: "calls" data_type: TYPE_INT32 dims: [ 1 ] }
]
response_cache { enable: true }
"""

TALLY_MODEL = """
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.log = Path(args["model_repository"]) / "executions"
        self.calls = 0

    def execute(self, requests):
        responses = []
        for request in requests:
            self.calls += 1
            with self.log.open("a") as log:
                log.write("executed\\n")
            x = pb_utils.get_input_tensor_by_name(request, "x").as_numpy()
            calls = np.full((x.shape[0], 1), self.calls, dtype=np.int32)
            responses.append(pb_utils.InferenceResponse(
                [pb_utils.Tensor("y", x * 2), pb_utils.Tensor("calls", calls)]
            ))
        return responses
"""


def pipeline_repository(root: Path) -> Path:
    """``standardize``, ``scale``, ``label`` and ``pipeline`` (``tally`` is
    written on its own: ``write_python_model(root, "tally", TALLY_CONFIG, TALLY_MODEL)``)."""
    write_model(root, "scale")
    write_python_model(root, "standardize", STANDARDIZE_CONFIG, STANDARDIZE_MODEL)
    write_python_model(root, "label", LABEL_CONFIG, LABEL_MODEL)
    steps = [
        step("standardize", {"RAW": "RAW"}, {"X": "standardized"}),
        step("scale", {"x": "standardized"}, {"y": "scaled"}),
        step("label", {"Y": "scaled"}, {"SCORE": "SCORE", "LABEL": "LABEL"}),
    ]
    (root / "pipeline" / "1").mkdir(parents=True, exist_ok=True)
    (root / "pipeline" / "config.pbtxt").write_text(
        PIPELINE_CONFIG.replace("STEPS", "\n  ".join(steps))
    )
    return root
