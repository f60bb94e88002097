"""Load errors with a known fix say it: a classifier's ZipMap output (seq(map))
points at ``zipmap=False``, and config dims that differ from the graph's only
by a trailing 1 point at ``reshape``. The hints reach a remote caller through
RepositoryIndex, so they must not carry paths either."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format
from skl2onnx import to_onnx
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from inferd.clients import InferenceClient
from inferd.engines.base import EngineError, EngineOptions, Signature, TensorSpec
from inferd.engines.onnx import OnnxEngine
from inferd.protos import model_config_pb2
from inferd.server.repository import RepositoryError, complete_config
from tests.conftest import ServerThread

FP32 = np.dtype(np.float32)
INT64 = np.dtype(np.int64)

#: What skl2onnx writes for a classifier (label per row, probabilities per
#: class) next to an input with a trailing 1, as image-like exports have.
SIGNATURE = Signature(
    inputs=(TensorSpec("x", FP32, (-1, 4, 1)),),
    outputs=(TensorSpec("label", INT64, (-1,)), TensorSpec("probabilities", FP32, (-1, 3))),
)
X_OK = '{ name: "x" data_type: TYPE_FP32 dims: [ 4, 1 ] }'


def _config(text: str) -> model_config_pb2.ModelConfig:
    config = model_config_pb2.ModelConfig()
    text_format.Parse('name: "m" max_batch_size: 8 ' + text, config)
    return config


def _iris_classifier(tmp_path: Path, name: str, *, zipmap: bool) -> Path:
    """An skl2onnx LogisticRegression on iris, with or without its ZipMap."""
    features, labels = load_iris(return_X_y=True)
    clf = LogisticRegression(max_iter=1000).fit(features, labels)
    options = None if zipmap else {id(clf): {"zipmap": False}}
    onx = to_onnx(clf, features[:1].astype(np.float32), options=options, target_opset=17)
    path = tmp_path / name / "1" / "model.onnx"
    path.parent.mkdir(parents=True)
    path.write_bytes(onx.SerializeToString())
    return path


@pytest.mark.parametrize(
    ("tensors", "reshape"),
    [
        # Config one dim short of the graph, on an input.
        ('input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]', "[ 4, 1 ]"),
        # Triton's usual label config against skl2onnx's per-row scalar label.
        (
            f'input [ {X_OK} ] output [ {{ name: "label" data_type: TYPE_INT64 dims: [ 1 ] }} ]',
            "[ ]",
        ),
        # Config one dim longer than the graph.
        (
            f"input [ {X_OK} ] output [ "
            '{ name: "probabilities" data_type: TYPE_FP32 dims: [ 3, 1 ] } ]',
            "[ 3 ]",
        ),
        # A reshape that is itself one trailing 1 off.
        (
            'input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] reshape: { shape: [ 4 ] } } ]',
            "[ 4, 1 ]",
        ),
    ],
)
def test_trailing_one_suggests_reshape_and_the_suggestion_loads(tensors: str, reshape: str) -> None:
    with pytest.raises(RepositoryError) as info:
        complete_config(_config(tensors), SIGNATURE)
    message = str(info.value)
    assert "do not match the model's shape" in message
    assert f"reshape: {{ shape: {reshape} }}" in message
    # Following the advice gives a config that loads.
    fixed = _config(tensors)
    tensor = next(t for t in (*fixed.input, *fixed.output) if f"'{t.name}'" in message)
    tensor.reshape.Clear()
    tensor.reshape.SetInParent()
    tensor.reshape.shape.extend(int(d) for d in reshape.strip("[ ]").split(",") if d.strip())
    complete_config(fixed, SIGNATURE)


@pytest.mark.parametrize(
    "config",
    [
        # Not a trailing 1: a different size.
        _config('input [ { name: "x" data_type: TYPE_FP32 dims: [ 5 ] } ]'),
        # A trailing 1 off, but a variable dim that no reshape could stand for.
        _config('input [ { name: "x" data_type: TYPE_FP32 dims: [ -1 ] } ]'),
    ],
)
def test_other_mismatches_get_no_reshape_hint(config: model_config_pb2.ModelConfig) -> None:
    with pytest.raises(RepositoryError) as info:
        complete_config(config, SIGNATURE)
    assert "do not match the model's shape" in str(info.value)
    assert "reshape" not in str(info.value)


def test_scalar_without_batching_gets_no_reshape_hint() -> None:
    # An empty reshape needs batching (Triton refuses it otherwise).
    scalar = Signature(inputs=(TensorSpec("x", FP32, ()),), outputs=())
    config = model_config_pb2.ModelConfig()
    text_format.Parse('name: "m" input [ { name: "x" data_type: TYPE_FP32 dims: [ 1 ] } ]', config)
    with pytest.raises(RepositoryError) as info:
        complete_config(config, scalar)
    assert "reshape" not in str(info.value)


def test_zipmap_output_suggests_zipmap_false(tmp_path: Path) -> None:
    path = _iris_classifier(tmp_path, "iris", zipmap=True)
    with pytest.raises(EngineError) as info:
        OnnxEngine(path, EngineOptions())
    message = str(info.value)
    assert "seq(map(int64,tensor(float)))" in message
    assert "{'zipmap': False}" in message
    assert str(tmp_path) not in message


def test_other_unsupported_types_get_no_zipmap_hint(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("SequenceConstruct", ["x"], ["seq"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [
            helper.make_value_info(
                "seq",
                helper.make_sequence_type_proto(
                    helper.make_tensor_type_proto(TensorProto.FLOAT, [2])
                ),
            )
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "seq.onnx"
    onnx.save(model, str(path))
    with pytest.raises(EngineError) as info:
        OnnxEngine(path, EngineOptions())
    assert "cannot carry" in str(info.value)
    assert "zipmap" not in str(info.value).lower()


def test_callers_see_the_hints_without_paths(
    tmp_path: Path, make_server: Callable[..., ServerThread]
) -> None:
    _iris_classifier(tmp_path, "with_zipmap", zipmap=True)
    _iris_classifier(tmp_path, "label_dims", zipmap=False)
    (tmp_path / "label_dims" / "config.pbtxt").write_text(
        "max_batch_size: 8\n"
        'input [ { name: "X" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
        'output [ { name: "label" data_type: TYPE_INT64 dims: [ 1 ] } ]\n'
    )
    server = make_server(tmp_path, strict_readiness=False)
    with InferenceClient(server.address) as client:
        reasons = {entry["name"]: entry["reason"] for entry in client.repository_index()}
    assert "{'zipmap': False}" in reasons["with_zipmap"]
    assert "reshape: { shape: [ ] }" in reasons["label_dims"]
    for reason in reasons.values():
        assert str(tmp_path) not in reason
        assert str(tmp_path.resolve()) not in reason
