"""Triton-style repositories (configs written the way Triton's docs write
them, ONNX models built with onnx.helper) driven by stock ``tritonclient.grpc``:
reshape, the classification extension, backend/platform in ModelConfig, the
stream's final-response flag and --strict-readiness.

The client runs in a child process (``tritonclient_calls.py``; see there why);
expected answers are computed here with numpy.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from conftest import ServerThread
from onnx import TensorProto, helper

from inferd.server.app import ServerConfig
from inferd.server.repository import ModelRepository

CALLS = Path(__file__).with_name("tritonclient_calls.py")
FP32 = TensorProto.FLOAT

RESHAPE_BATCHED = """
name: "reshape_batched"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [ { name: "RIN" data_type: TYPE_FP32 dims: [ 4 ] reshape: { shape: [ 2, 2 ] } } ]
output [
  { name: "ROUT" data_type: TYPE_FP32 dims: [ 4 ] reshape: { shape: [ 2, 2 ] } },
  { name: "RSUM" data_type: TYPE_FP32 dims: [ 1 ] reshape: { shape: [ ] } }
]
"""
RESHAPE_FIXED = """
name: "reshape_fixed"
platform: "onnxruntime_onnx"
max_batch_size: 0
input [ { name: "RIN" data_type: TYPE_FP32 dims: [ 4 ] reshape: { shape: [ 2, 2 ] } } ]
output [ { name: "ROUT" data_type: TYPE_FP32 dims: [ 4 ] reshape: { shape: [ 2, 2 ] } } ]
"""
RESHAPE_VARIABLE = """
name: "reshape_variable"
backend: "onnxruntime"
max_batch_size: 0
input [ { name: "X" data_type: TYPE_FP32 dims: [ 2, -1 ] reshape: { shape: [ 2, 1, -1 ] } } ]
output [ { name: "Y" data_type: TYPE_FP32 dims: [ 2, -1 ] reshape: { shape: [ 2, 1, -1 ] } } ]
"""
CLASSIFIER = """
name: "classifier"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [ { name: "X" data_type: TYPE_FP32 dims: [ 5 ] } ]
output [
  { name: "Y" data_type: TYPE_FP32 dims: [ 5 ] label_filename: "labels.txt" },
  { name: "Z" data_type: TYPE_FP32 dims: [ 5 ] },
  { name: "I" data_type: TYPE_INT32 dims: [ 5 ] },
  { name: "B" data_type: TYPE_BOOL dims: [ 5 ] }
]
"""
CLASSIFIER_FIXED = """
name: "classifier_fixed"
platform: "onnxruntime_onnx"
max_batch_size: 0
input [ { name: "X" data_type: TYPE_FP32 dims: [ 5 ] } ]
output [ { name: "Y" data_type: TYPE_FP32 dims: [ 5 ] label_filename: "labels.txt" } ]
"""
#: Index 2 has an empty label and index 4 none: both answer "value:index".
LABELS = "cat\ndog\n\nbird\n"
BROKEN = """
name: "broken"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [ { name: "RIN" data_type: TYPE_FP32 dims: [ 4 ] reshape: { shape: [ 3 ] } } ]
"""


def _save(root: Path, name: str, config: str, graph: onnx.GraphProto) -> None:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    (root / name / "1").mkdir(parents=True)
    onnx.save(model, str(root / name / "1" / "model.onnx"))
    (root / name / "config.pbtxt").write_text(config)


def _reshape_batched(root: Path) -> None:
    rin = helper.make_tensor_value_info("RIN", FP32, ["N", 2, 2])
    rout = helper.make_tensor_value_info("ROUT", FP32, ["N", 2, 2])
    rsum = helper.make_tensor_value_info("RSUM", FP32, ["N"])
    two = helper.make_tensor("two", FP32, [], [2.0])
    axes = helper.make_tensor("axes", TensorProto.INT64, [2], [1, 2])
    nodes = [
        helper.make_node("Mul", ["RIN", "two"], ["ROUT"]),
        helper.make_node("ReduceSum", ["RIN", "axes"], ["RSUM"], keepdims=0),
    ]
    graph = helper.make_graph(nodes, "rb", [rin], [rout, rsum], [two, axes])
    _save(root, "reshape_batched", RESHAPE_BATCHED, graph)


def _reshape_fixed(root: Path) -> None:
    rin = helper.make_tensor_value_info("RIN", FP32, [2, 2])
    rout = helper.make_tensor_value_info("ROUT", FP32, [2, 2])
    one = helper.make_tensor("one", FP32, [], [1.0])
    graph = helper.make_graph(
        [helper.make_node("Add", ["RIN", "one"], ["ROUT"])], "rf", [rin], [rout], [one]
    )
    _save(root, "reshape_fixed", RESHAPE_FIXED, graph)


def _reshape_variable(root: Path) -> None:
    x = helper.make_tensor_value_info("X", FP32, [2, 1, "L"])
    y = helper.make_tensor_value_info("Y", FP32, [2, 1, "L"])
    graph = helper.make_graph([helper.make_node("Neg", ["X"], ["Y"])], "rv", [x], [y])
    _save(root, "reshape_variable", RESHAPE_VARIABLE, graph)


def _classifier(root: Path, name: str, config: str, batched: bool) -> None:
    shape: list[int | str] = ["N", 5] if batched else [5]
    x = helper.make_tensor_value_info("X", FP32, shape)
    outputs = [helper.make_tensor_value_info("Y", FP32, shape)]
    nodes = [helper.make_node("Identity", ["X"], ["Y"])]
    if batched:
        zero = helper.make_tensor("zero", FP32, [], [0.0])
        outputs += [
            helper.make_tensor_value_info("Z", FP32, shape),
            helper.make_tensor_value_info("I", TensorProto.INT32, shape),
            helper.make_tensor_value_info("B", TensorProto.BOOL, shape),
        ]
        nodes += [
            helper.make_node("Identity", ["X"], ["Z"]),
            helper.make_node("Cast", ["X"], ["I"], to=TensorProto.INT32),
            helper.make_node("Greater", ["X", "zero"], ["B"]),
        ]
        graph = helper.make_graph(nodes, name, [x], outputs, [zero])
    else:
        graph = helper.make_graph(nodes, name, [x], outputs)
    _save(root, name, config, graph)
    (root / name / "labels.txt").write_text(LABELS)


def _broken(root: Path) -> None:
    _reshape_batched(root)
    (root / "reshape_batched").rename(root / "broken")
    (root / "broken" / "config.pbtxt").write_text(BROKEN)


def run_calls(address: str, calls: list[dict[str, Any]]) -> list[Any]:
    # find_spec locates the package without importing it (importing would clash).
    if importlib.util.find_spec("tritonclient") is None:
        pytest.skip("tritonclient is not installed (pip install '.[test]')")
    proc = subprocess.run(
        [sys.executable, str(CALLS)],
        input=json.dumps({"url": address, "calls": calls}),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-6000:]
    answers: list[Any] = json.loads(proc.stdout)
    return answers


def tensor(name: str, array: np.ndarray, datatype: str = "FP32") -> dict[str, Any]:
    return {
        name: {
            "data": array.ravel().tolist(),
            "dtype": str(array.dtype),
            "shape": list(array.shape),
            "datatype": datatype,
        }
    }


def infer(model: str, inputs: dict[str, Any], **outputs: int) -> dict[str, Any]:
    """An infer call; ``outputs`` maps an output name to its class count (0: raw)."""
    requested = [{"name": n, "class_count": k} for n, k in outputs.items()]
    return {"kind": "infer", "model": model, "inputs": inputs, "outputs": requested}


def array_of(answer: dict[str, Any], name: str) -> np.ndarray:
    out = answer["outputs"][name]
    return np.array(out["data"], dtype=np.float32).reshape(out["shape"])


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("triton_repo")
    _reshape_batched(root)
    _reshape_fixed(root)
    _reshape_variable(root)
    _classifier(root, "classifier", CLASSIFIER, batched=True)
    _classifier(root, "classifier_fixed", CLASSIFIER_FIXED, batched=False)
    return root


@pytest.fixture(scope="module")
def address(repository: Path) -> Iterator[str]:
    server = ServerThread(ServerConfig(model_repository=repository, grpc_port=0)).start()
    yield server.address
    server.stop()


# -- reshape ---------------------------------------------------------------------------------


def test_reshape_with_batching_at_every_batch_size(address: str) -> None:
    rng = np.random.default_rng(1)
    batches = [rng.standard_normal((n, 4)).astype(np.float32) for n in range(1, 9)]
    calls = [{"kind": "model_metadata", "model": "reshape_batched"}]
    calls += [infer("reshape_batched", tensor("RIN", x), ROUT=0, RSUM=0) for x in batches]
    meta, *answers = run_calls(address, calls)
    shapes = {t["name"]: [int(d) for d in t["shape"]] for t in meta["inputs"] + meta["outputs"]}
    assert shapes == {"RIN": [-1, 4], "ROUT": [-1, 4], "RSUM": [-1, 1]}
    for x, answer in zip(batches, answers, strict=True):
        # Answered in the config's dims, as the metadata says, not the model's [N,2,2] / [N].
        assert answer["outputs"]["ROUT"]["shape"] == [len(x), 4]
        assert answer["outputs"]["RSUM"]["shape"] == [len(x), 1]
        np.testing.assert_allclose(array_of(answer, "ROUT"), x * 2, rtol=1e-6)
        np.testing.assert_allclose(array_of(answer, "RSUM"), x.sum(axis=1, keepdims=True), 1e-5)


def test_reshape_without_batching(address: str) -> None:
    x = np.array([1.0, 2.0, 3.0, 4.0], dtype=np.float32)
    meta, answer, wrong = run_calls(
        address,
        [
            {"kind": "model_metadata", "model": "reshape_fixed"},
            infer("reshape_fixed", tensor("RIN", x)),
            # The model's own shape is not what the config advertises.
            infer("reshape_fixed", tensor("RIN", x.reshape(2, 2))),
        ],
    )
    assert [int(d) for d in meta["inputs"][0]["shape"]] == [4]
    assert [int(d) for d in meta["outputs"][0]["shape"]] == [4]
    assert answer["outputs"]["ROUT"]["shape"] == [4]
    np.testing.assert_array_equal(array_of(answer, "ROUT"), x + 1)
    assert wrong["error"]["status"] == "StatusCode.INVALID_ARGUMENT"


def test_reshape_carries_variable_dims_over_in_order(address: str) -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    (answer,) = run_calls(address, [infer("reshape_variable", tensor("X", x))])
    assert answer["outputs"]["Y"]["shape"] == [2, 3]
    np.testing.assert_array_equal(array_of(answer, "Y"), -x)


# -- classification --------------------------------------------------------------------------

#: Rows differ, row 1 has ties (2.5 at 0, 3 and 4; listed in index order).
ROWS = np.array(
    [[0.1, 0.7, 0.05, 0.125, 0.025], [2.5, -1.0, 0.0, 2.5, 2.5], [-3.0, -2.0, -1.0, 9.0, 4.0]],
    dtype=np.float32,
)


def test_classification_top_k_per_row_with_labels(address: str) -> None:
    one, three = run_calls(
        address,
        [infer("classifier", tensor("X", ROWS), Y=1), infer("classifier", tensor("X", ROWS), Y=3)],
    )
    assert one["outputs"]["Y"] == {
        "datatype": "BYTES",
        "shape": [3, 1],
        "data": ["0.700000:1:dog", "2.500000:0:cat", "9.000000:3:bird"],
    }
    assert three["outputs"]["Y"]["shape"] == [3, 3]
    assert three["outputs"]["Y"]["data"] == [
        *("0.700000:1:dog", "0.125000:3:bird", "0.100000:0:cat"),
        # Ties in index order; index 4 has no label.
        *("2.500000:0:cat", "2.500000:3:bird", "2.500000:4"),
        # Index 2's label is an empty line: no label.
        *("9.000000:3:bird", "4.000000:4", "-1.000000:2"),
    ]


def test_classification_without_labels_and_of_integers(address: str) -> None:
    (answer,) = run_calls(address, [infer("classifier", tensor("X", ROWS), Z=2, I=2, Y=0)])
    assert answer["outputs"]["Z"]["data"] == [
        *("0.700000:1", "0.125000:3"),
        *("2.500000:0", "2.500000:3"),
        *("9.000000:3", "4.000000:4"),
    ]
    # Integers print as integers (C++ std::to_string); Cast truncates 2.5 to 2.
    assert answer["outputs"]["I"]["data"] == ["0:0", "0:1", "2:0", "2:3", "9:3", "4:4"]
    # A raw output beside them is untouched.
    assert answer["outputs"]["Y"]["datatype"] == "FP32"
    np.testing.assert_array_equal(array_of(answer, "Y"), ROWS)


def test_classification_k_over_the_class_count_answers_every_class(address: str) -> None:
    (answer,) = run_calls(address, [infer("classifier", tensor("X", ROWS[:1]), Y=12)])
    assert answer["outputs"]["Y"]["shape"] == [1, 5]
    assert answer["outputs"]["Y"]["data"] == [
        "0.700000:1:dog",
        "0.125000:3:bird",
        "0.100000:0:cat",
        "0.050000:2",
        "0.025000:4",
    ]


def test_classification_without_batching_has_no_batch_dim(address: str) -> None:
    (answer,) = run_calls(address, [infer("classifier_fixed", tensor("X", ROWS[2]), Y=2)])
    assert answer["outputs"]["Y"] == {
        "datatype": "BYTES",
        "shape": [2],
        "data": ["9.000000:3:bird", "4.000000:4"],
    }


def test_classification_of_a_non_numeric_output_is_refused(address: str) -> None:
    (answer,) = run_calls(address, [infer("classifier", tensor("X", ROWS), B=2)])
    assert answer["error"]["status"] == "StatusCode.INVALID_ARGUMENT"
    assert "output 'B'" in answer["error"]["message"]
    assert "unsupported type 'BOOL'" in answer["error"]["message"]


def test_server_metadata_lists_classification(address: str) -> None:
    (meta,) = run_calls(address, [{"kind": "server_metadata"}])
    assert "classification" in meta["extensions"]


# -- ModelConfig: backend and platform -------------------------------------------------------


def test_model_config_fills_backend_from_platform_and_platform_from_backend(
    address: str,
) -> None:
    from_platform, from_backend = run_calls(
        address,
        [
            {"kind": "model_config", "model": "reshape_batched"},
            {"kind": "model_config", "model": "reshape_variable"},
        ],
    )
    assert (from_platform["platform"], from_platform["backend"]) == (
        "onnxruntime_onnx",
        "onnxruntime",
    )
    assert (from_backend["platform"], from_backend["backend"]) == (
        "onnxruntime_onnx",
        "onnxruntime",
    )


@pytest.mark.parametrize(
    ("config", "platform", "backend"),
    [
        ('platform: "tensorrt_plan"', "tensorrt_plan", "tensorrt"),
        ('backend: "tensorrt"', "tensorrt_plan", "tensorrt"),
        ("", "tensorrt_plan", "tensorrt"),  # from the model.plan file
        ('platform: "onnxruntime_onnx"', "onnxruntime_onnx", "onnxruntime"),
    ],
)
def test_repository_fills_platform_and_backend(
    tmp_path: Path, config: str, platform: str, backend: str
) -> None:
    filename = "model.plan" if platform == "tensorrt_plan" else "model.onnx"
    (tmp_path / "m" / "1").mkdir(parents=True)
    (tmp_path / "m" / "1" / filename).write_bytes(b"")
    (tmp_path / "m" / "config.pbtxt").write_text(config)
    source = ModelRepository(tmp_path).source("m")
    assert (source.config.platform, source.config.backend) == (platform, backend)
    # Triton fills the model file's name too.
    assert source.config.default_model_filename == filename


# -- streaming -------------------------------------------------------------------------------


@pytest.mark.parametrize("empty_final", [False, True])
def test_stream_responses_carry_triton_final_response(address: str, empty_final: bool) -> None:
    good = tensor("RIN", np.ones((1, 4), np.float32))
    bad = tensor("RIN", np.ones((1, 3), np.float32))
    (answers,) = run_calls(
        address,
        [
            {
                "kind": "stream",
                "model": "reshape_batched",
                "requests": [good, good],
                "enable_empty_final_response": empty_final,
            }
        ],
    )
    assert len(answers) == 2  # one response per request, no extra empty one
    for answer in answers:
        assert answer["parameters"]["triton_final_response"] is True
    (failed,) = run_calls(
        address, [{"kind": "stream", "model": "reshape_batched", "requests": [bad]}]
    )
    assert "error" in failed[0]  # reported on the stream, which goes on


# -- readiness -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def repository_with_a_broken_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("broken_repo")
    _broken(root)
    _reshape_fixed(root)
    return root


@pytest.mark.parametrize("strict", [True, False])
def test_readiness_with_a_broken_model(repository_with_a_broken_model: Path, strict: bool) -> None:
    config = ServerConfig(
        model_repository=repository_with_a_broken_model, grpc_port=0, strict_readiness=strict
    )
    server = ServerThread(config).start()
    try:
        ready, broken_ready, good_ready, index, answer = run_calls(
            server.address,
            [
                {"kind": "server_ready"},
                {"kind": "model_ready", "model": "broken"},
                {"kind": "model_ready", "model": "reshape_fixed"},
                {"kind": "repository_index"},
                infer("reshape_fixed", tensor("RIN", np.zeros(4, np.float32))),
            ],
        )
    finally:
        server.stop()
    assert ready is (not strict)
    assert (broken_ready, good_ready) == (False, True)
    rows = {m["name"]: m for m in index}
    assert rows["broken"]["state"] == "UNAVAILABLE"
    assert "different sizes" in rows["broken"]["reason"]
    assert rows["reshape_fixed"]["state"] == "READY"
    assert answer["outputs"]["ROUT"]["data"] == [1.0] * 4
