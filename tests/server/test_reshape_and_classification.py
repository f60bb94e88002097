"""Triton's reshape and classification semantics, unit by unit: the config
checks, the shape mapping, the class results' edge cases, label files, the
readiness setting. End to end with tritonclient: tests/compat/test_triton_repositories.py."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from inferd.protos import grpc_service_pb2 as pb
from inferd.server.classification import MAX_ROW_ELEMENTS, classify
from inferd.server.codec import decode_request, encode_response
from inferd.server.errors import InvalidArgument
from inferd.server.model_io import ModelIO, TensorInfo
from inferd.server.models import ModelManager
from inferd.server.repository import ModelRepository, RepositoryError
from inferd.server.reshape import reshape_problem, to_config, to_model
from inferd.server.settings import parse_serve_settings

# -- reshape: the config check (Triton's ValidateIOShape) -------------------------------------


@pytest.mark.parametrize(
    ("dims", "shape", "batching"),
    [
        ([4], [2, 2], True),
        ([4], [2, 2], False),
        ([1], [], True),  # an empty reshape stands for one element
        ([2, -1], [2, 1, -1], False),
        ([2, 4, -1, 6], [8, -1, 1, 6], True),  # Triton's own example
    ],
)
def test_reshapes_triton_accepts(dims: list[int], shape: list[int], batching: bool) -> None:
    assert reshape_problem(dims, shape, batching) is None


@pytest.mark.parametrize(
    ("dims", "shape", "batching", "fragment"),
    [
        ([1], [], False, "empty reshape without batching"),
        ([4], [0, 4], True, "must be >= 1"),
        ([4], [3], True, "different sizes"),
        ([2], [], True, "different sizes"),
        ([-1], [2, -1], True, "different sizes"),
        ([-1, 2], [-1, -1, 2], True, "different numbers of variable-size dimensions"),
    ],
)
def test_reshapes_triton_refuses(
    dims: list[int], shape: list[int], batching: bool, fragment: str
) -> None:
    problem = reshape_problem(dims, shape, batching)
    assert problem is not None and fragment in problem


def test_reshape_maps_variable_dims_in_order_and_keeps_the_batch_dim() -> None:
    info = TensorInfo("x", "FP32", (-1, 2, -1, 6), reshape=(1, 2, -1, 3, 2))
    assert reshape_problem(info.shape[1:], info.reshape or (), True) is None
    x = np.arange(3 * 2 * 5 * 6, dtype=np.float32).reshape(3, 2, 5, 6)
    model = to_model(x, info, batched=True)
    assert model.shape == (3, 1, 2, 5, 3, 2)
    back = to_config(model, info, batched=True)
    np.testing.assert_array_equal(back, x)
    flat = TensorInfo("y", "FP32", (-1, 1), reshape=())
    assert to_config(np.arange(3, dtype=np.float32), flat, batched=True).shape == (3, 1)
    assert to_model(np.zeros((3, 1), np.float32), flat, batched=True).shape == (3,)


# -- classification ----------------------------------------------------------------------------


def _io(datatype: str = "FP32", labels: tuple[str, ...] = ()) -> ModelIO:
    return ModelIO(
        {"x": TensorInfo("x", "FP32", (-1, 3))},
        {"y": TensorInfo("y", datatype, (-1, 3), labels=labels)},
        max_batch_size=4,
    )


def _request(param: pb.InferParameter) -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest(model_name="m")
    msg.inputs.add(name="x", datatype="FP32", shape=[1, 3])
    msg.raw_input_contents.append(np.zeros((1, 3), np.float32).tobytes())
    msg.outputs.add(name="y").parameters["classification"].CopyFrom(param)
    return msg


@pytest.mark.parametrize("k", [0, -2])
def test_class_count_below_one_is_refused(k: int) -> None:
    with pytest.raises(InvalidArgument, match="'classification' parameter, expected >= 1"):
        decode_request(_request(pb.InferParameter(int64_param=k)), _io())


def test_class_count_is_checked_against_the_datatype_before_the_model_runs() -> None:
    with pytest.raises(InvalidArgument, match="unsupported type 'FP16'"):
        decode_request(_request(pb.InferParameter(int64_param=1)), _io("FP16"))


def test_a_huge_class_count_answers_every_class() -> None:
    request = decode_request(_request(pb.InferParameter(int64_param=2**40)), _io())
    assert request.classification == {"y": 2**32 - 1}
    response = encode_response(
        "m", "1", "", {"y": np.array([[1, 3, 2]], np.float32)}, _io(), ("y",), {"y": 2**32 - 1}
    )
    assert list(response.outputs[0].shape) == [1, 3]


def test_a_row_over_a_million_elements_is_refused() -> None:
    info = TensorInfo("y", "FP32", (-1, -1))
    with pytest.raises(InvalidArgument, match="too large"):
        classify(np.zeros((1, MAX_ROW_ELEMENTS + 1), np.float32), info, 1, batched=True)


def test_values_print_as_cpp_to_string_does() -> None:
    info = TensorInfo("y", "FP64", (-1, 3))
    out = classify(np.array([[1e20, -0.0000004, 2.5]]), info, 3, batched=True)
    assert list(out[0]) == [b"100000000000000000000.000000:0", b"2.500000:2", b"-0.000000:1"]
    uint = TensorInfo("y", "UINT64", (-1, 2))
    big = classify(np.array([[2**64 - 1, 1]], np.uint64), uint, 1, batched=True)
    assert list(big[0]) == [b"18446744073709551615:0"]


def test_ties_keep_index_order_in_long_rows_too() -> None:
    info = TensorInfo("y", "INT32", (-1, 40))
    row = np.zeros((1, 40), np.int32)
    out = classify(row, info, 40, batched=True)
    assert [int(v.split(b":")[1]) for v in out[0]] == list(range(40))


# -- label files ---------------------------------------------------------------------------------

CONFIG = """
max_batch_size: 0
input [ { name: "x" data_type: TYPE_FP32 dims: [ 3 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 3 ] label_filename: "%s" } ]
"""


def _model(root: Path, label_filename: str) -> None:
    (root / "m" / "1").mkdir(parents=True)
    (root / "m" / "1" / "model.onnx").write_bytes(b"")
    (root / "m" / "config.pbtxt").write_text(CONFIG % label_filename)


def test_labels_are_the_files_lines(tmp_path: Path) -> None:
    _model(tmp_path, "labels.txt")
    (tmp_path / "m" / "labels.txt").write_text("a\n\nc\n")
    assert ModelRepository(tmp_path).source("m").labels == {"y": ("a", "", "c")}


@pytest.mark.parametrize("filename", ["../outside.txt", "/etc/hostname", "missing.txt"])
def test_label_file_outside_the_model_or_missing_fails_the_load(
    tmp_path: Path, filename: str
) -> None:
    _model(tmp_path, filename)
    (tmp_path / "outside.txt").write_text("secret\n")
    with pytest.raises(RepositoryError, match="label_filename"):
        ModelRepository(tmp_path).source("m")


def test_changed_labels_are_picked_up_on_reload(tmp_path: Path) -> None:
    from onnx import TensorProto, helper, save

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    _model(tmp_path, "labels.txt")
    save(model, str(tmp_path / "m" / "1" / "model.onnx"))
    (tmp_path / "m" / "labels.txt").write_text("a\nb\nc\n")
    manager = ModelManager(ModelRepository(tmp_path))

    async def labels_after_load() -> tuple[str, ...]:
        await manager.load("m")
        return manager.resolve("m").io.outputs["y"].labels

    assert asyncio.run(labels_after_load()) == ("a", "b", "c")
    (tmp_path / "m" / "labels.txt").write_text("x\ny\nz\n")
    assert asyncio.run(labels_after_load()) == ("x", "y", "z")


# -- readiness -------------------------------------------------------------------------------------


def test_non_strict_readiness_waits_for_the_start_up_load(tmp_path: Path) -> None:
    manager = ModelManager(ModelRepository(tmp_path), strict_readiness=False)
    manager.expect(["still_loading"])
    assert not manager.server_ready
    manager.mark_started()
    assert manager.server_ready  # though "still_loading" never became ready
    strict = ModelManager(ModelRepository(tmp_path))
    strict.expect(["still_loading"])
    strict.mark_started()
    assert not strict.server_ready


def _strict(*args: str, environ: dict[str, str] | None = None) -> bool:
    config = parse_serve_settings(["--model-repository", ".", *args], environ).to_config()
    return config.strict_readiness


def test_strict_readiness_flag() -> None:
    """Triton spells it `--strict-readiness=false`; ours also takes `--no-...`
    and INFERD_STRICT_READINESS."""
    assert _strict() is True
    assert _strict("--strict-readiness", "false") is False
    assert _strict("--strict-readiness=false") is False
    assert _strict("--strict-readiness", "True") is True
    assert _strict("--strict-readiness") is True
    assert _strict("--no-strict-readiness") is False
    assert _strict(environ={"INFERD_STRICT_READINESS": "false"}) is False
    with pytest.raises(SystemExit):
        _strict("--strict-readiness", "maybe")


# -- the stream's final-response flag -----------------------------------------------------------


def test_a_failed_stream_response_is_final_too(server_address: str) -> None:
    # tritonclient turns a failed stream response into an exception and drops
    # its parameters, so read the raw stream.
    import grpc

    from inferd.protos.grpc_service_pb2_grpc import GRPCInferenceServiceStub

    good = pb.ModelInferRequest(model_name="digits_mlp", id="good")
    good.inputs.add(name="pixels", datatype="FP32", shape=[1, 64])
    good.raw_input_contents.append(np.zeros((1, 64), np.float32).tobytes())
    bad = pb.ModelInferRequest(model_name="digits_mlp", id="bad")
    bad.inputs.add(name="pixels", datatype="FP32", shape=[1, 3])
    bad.raw_input_contents.append(np.zeros((1, 3), np.float32).tobytes())
    with grpc.insecure_channel(server_address) as channel:
        answers = list(
            GRPCInferenceServiceStub(channel).ModelStreamInfer(iter([good, bad]), timeout=30)
        )
    by_id = {a.infer_response.id: a for a in answers}
    assert by_id["bad"].error_message and not by_id["good"].error_message
    for answer in answers:
        assert answer.infer_response.parameters["triton_final_response"].bool_param is True
