"""OnnxEngine against real onnxruntime, on tiny graphs written to tmp_path."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from inferd.engines.base import EngineError, EngineOptions
from inferd.engines.onnx import OnnxEngine, _clean_message
from inferd.protos.datatypes import NUMPY_DTYPES

Dim = int | str | None
IO = tuple[str, int, Sequence[Dim] | None]
ModelFactory = Callable[..., Path]


def _vi(name: str, elem: int, shape: Sequence[Dim] | None) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


@pytest.fixture
def make_model(tmp_path: Path) -> ModelFactory:
    """Write a one-graph model to tmp_path and return its path."""
    counter = iter(range(1000))

    def make(
        nodes: list[onnx.NodeProto],
        inputs: list[IO],
        outputs: list[IO],
        initializers: Sequence[onnx.TensorProto] = (),
    ) -> Path:
        graph = helper.make_graph(
            nodes,
            "g",
            [_vi(*i) for i in inputs],
            [_vi(*o) for o in outputs],
            list(initializers),
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        path = tmp_path / f"m{next(counter)}" / "1" / "model.onnx"
        path.parent.mkdir(parents=True)
        path.write_bytes(model.SerializeToString())
        return path

    return make


def _identity(make_model: ModelFactory, elem: int, shape: Sequence[Dim] = ("batch", 3)) -> Path:
    return make_model(
        [helper.make_node("Identity", ["x"], ["y"])],
        [("x", elem, shape)],
        [("y", elem, shape)],
    )


def _add_model(make_model: ModelFactory) -> Path:
    """y = a + b, z = a * 2, with both inputs fully dynamic so ORT itself can fail."""
    return make_model(
        [
            helper.make_node("Add", ["a", "b"], ["y"]),
            helper.make_node("Mul", ["a", "two"], ["z"]),
        ],
        [("a", TensorProto.FLOAT, [None, None]), ("b", TensorProto.FLOAT, [None, None])],
        [("y", TensorProto.FLOAT, [None, None]), ("z", TensorProto.FLOAT, [None, None])],
        [helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])],
    )


V2_CASES = [
    ("BOOL", TensorProto.BOOL),
    ("INT8", TensorProto.INT8),
    ("INT16", TensorProto.INT16),
    ("INT32", TensorProto.INT32),
    ("INT64", TensorProto.INT64),
    ("UINT8", TensorProto.UINT8),
    ("UINT16", TensorProto.UINT16),
    ("UINT32", TensorProto.UINT32),
    ("UINT64", TensorProto.UINT64),
    ("FP16", TensorProto.FLOAT16),
    ("BF16", TensorProto.BFLOAT16),
    ("FP32", TensorProto.FLOAT),
    ("FP64", TensorProto.DOUBLE),
    ("BYTES", TensorProto.STRING),
]


def _sample(v2: str) -> np.ndarray:
    dtype = NUMPY_DTYPES[v2]
    if v2 == "BYTES":
        return np.array([[b"a", b"", b"\xc3\xa9"], [b"x\x00y", b"long" * 10, b"z"]], dtype=object)
    if v2 == "BOOL":
        return np.array([[True, False, True], [False, False, True]])
    return np.arange(6).reshape(2, 3).astype(dtype)


@pytest.mark.parametrize(("v2", "elem"), V2_CASES, ids=[c[0] for c in V2_CASES])
def test_every_v2_datatype_maps_and_round_trips(
    make_model: ModelFactory, v2: str, elem: int
) -> None:
    with OnnxEngine(_identity(make_model, elem), EngineOptions()) as engine:
        (spec,) = engine.signature.inputs
        assert spec.dtype == NUMPY_DTYPES[v2]
        assert engine.signature.outputs[0].dtype == NUMPY_DTYPES[v2]
        x = _sample(v2)
        y = engine.infer({"x": x})["y"]
        assert y.dtype == NUMPY_DTYPES[v2]
        assert y.shape == x.shape
        assert y.flags.c_contiguous
        if v2 == "BYTES":
            assert all(type(v) is bytes for v in y.flat)
            assert y.tolist() == x.tolist()
        else:
            np.testing.assert_array_equal(y, x)


def test_signature_dims_and_names(make_model: ModelFactory) -> None:
    path = make_model(
        [helper.make_node("Identity", ["x"], ["y"])],
        [("x", TensorProto.FLOAT, ["batch", None, 4])],
        [("y", TensorProto.FLOAT, ["batch", None, 4])],
    )
    engine = OnnxEngine(path, EngineOptions())
    sig = engine.signature
    assert [t.name for t in sig.inputs] == ["x"]
    assert [t.name for t in sig.outputs] == ["y"]
    assert sig.inputs[0].shape == (-1, -1, 4)
    assert sig.outputs[0].shape == (-1, -1, 4)
    assert sig.batch_sizes == ()
    assert sig.input("x") is sig.inputs[0]


def test_bf16_cast_graph_computes(make_model: ModelFactory) -> None:
    # bf16 in, float and bf16 out: exercises the OrtValue path both ways.
    path = make_model(
        [
            helper.make_node("Cast", ["x"], ["f"], to=TensorProto.FLOAT),
            helper.make_node("Cast", ["f"], ["back"], to=TensorProto.BFLOAT16),
        ],
        [("x", TensorProto.BFLOAT16, [None, 2])],
        [("f", TensorProto.FLOAT, [None, 2]), ("back", TensorProto.BFLOAT16, [None, 2])],
    )
    engine = OnnxEngine(path, EngineOptions())
    x = np.array([[1.5, -2.0], [0.25, 3.0e8]], dtype=ml_dtypes.bfloat16)
    out = engine.infer({"x": x})
    np.testing.assert_array_equal(out["f"], x.astype(np.float32))
    assert out["back"].dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(out["back"], x)
    assert list(engine.infer({"x": x}, ["back"])) == ["back"]


def test_bf16_compute_on_cpu_is_a_load_error(make_model: ModelFactory) -> None:
    # ORT's CPU provider has no bfloat16 Add kernel: documented as unsupported.
    path = make_model(
        [helper.make_node("Add", ["x", "x"], ["y"])],
        [("x", TensorProto.BFLOAT16, [None, 2])],
        [("y", TensorProto.BFLOAT16, [None, 2])],
    )
    with pytest.raises(EngineError, match="could not be loaded"):
        OnnxEngine(path, EngineOptions())


def test_bf16_with_bytes_input_is_refused_at_load(make_model: ModelFactory) -> None:
    path = make_model(
        [
            helper.make_node("Identity", ["s"], ["s_out"]),
            helper.make_node("Identity", ["x"], ["y"]),
        ],
        [("s", TensorProto.STRING, [None]), ("x", TensorProto.BFLOAT16, [None])],
        [("s_out", TensorProto.STRING, [None]), ("y", TensorProto.BFLOAT16, [None])],
    )
    with pytest.raises(EngineError, match="BF16 tensors and BYTES inputs"):
        OnnxEngine(path, EngineOptions())


def test_output_subset(make_model: ModelFactory) -> None:
    engine = OnnxEngine(_add_model(make_model), EngineOptions())
    a = np.ones((2, 3), np.float32)
    b = np.full((2, 3), 4, np.float32)
    only_z = engine.infer({"a": a, "b": b}, ["z"])
    assert list(only_z) == ["z"]
    np.testing.assert_array_equal(only_z["z"], a * 2)
    both = engine.infer({"a": a, "b": b})
    assert sorted(both) == ["y", "z"]
    np.testing.assert_array_equal(both["y"], a + b)
    assert engine.infer({"a": a, "b": b}, []) == {}
    with pytest.raises(EngineError, match="unknown output 'nope'"):
        engine.infer({"a": a, "b": b}, ["nope"])


def test_bytes_round_trip_and_invalid_utf8(make_model: ModelFactory) -> None:
    engine = OnnxEngine(_identity(make_model, TensorProto.STRING, [None, 2]), EngineOptions())
    x = np.array([[b"caf\xc3\xa9", b""], [b"\x00nul", "already str"]], dtype=object)
    y = engine.infer({"x": x})["y"]
    assert y.tolist() == [[b"caf\xc3\xa9", b""], [b"\x00nul", b"already str"]]
    # numpy fixed-width bytes arrays are accepted too
    assert engine.infer({"x": np.array([[b"a", b"bc"]])})["y"].tolist() == [[b"a", b"bc"]]
    with pytest.raises(EngineError, match="not valid UTF-8"):
        engine.infer({"x": np.array([[b"ok", b"\xff"]], dtype=object)})
    with pytest.raises(EngineError, match="expected bytes"):
        engine.infer({"x": np.array([[b"ok", 3]], dtype=object)})
    with pytest.raises(EngineError, match="expected BYTES"):
        engine.infer({"x": np.zeros((1, 2), np.float32)})


def test_non_utf8_string_output_is_an_engine_error(make_model: ModelFactory) -> None:
    bad = numpy_helper.from_array(np.array([b"\xff"], dtype=object), "c")
    path = make_model(
        [
            helper.make_node("Constant", [], ["y"], value=bad),
            helper.make_node("Identity", ["x"], ["x_out"]),
        ],
        [("x", TensorProto.FLOAT, [1])],
        [("y", TensorProto.STRING, [1]), ("x_out", TensorProto.FLOAT, [1])],
    )
    engine = OnnxEngine(path, EngineOptions())
    with pytest.raises(EngineError, match="not valid UTF-8"):
        engine.infer({"x": np.ones(1, np.float32)})


def test_bad_shape_message_has_no_path(make_model: ModelFactory, tmp_path: Path) -> None:
    engine = OnnxEngine(_identity(make_model, TensorProto.FLOAT), EngineOptions())
    with pytest.raises(EngineError) as info:
        engine.infer({"x": np.ones((2, 4), np.float32)})
    assert "shape [2, 4]" in str(info.value)
    assert str(tmp_path) not in str(info.value)
    with pytest.raises(EngineError, match="shape"):
        engine.infer({"x": np.ones(3, np.float32)})  # wrong rank


def test_runtime_failure_message_is_scrubbed(make_model: ModelFactory) -> None:
    # Shapes pass the signature (all dims dynamic) but cannot broadcast, so the
    # error comes from inside ORT, which cites its own C++ source file.
    engine = OnnxEngine(_add_model(make_model), EngineOptions())
    with pytest.raises(EngineError) as info:
        engine.infer({"a": np.ones((2, 3), np.float32), "b": np.ones((2, 2), np.float32)})
    message = str(info.value)
    assert message.startswith("inference failed:")
    assert "broadcast" in message
    assert "/" not in message and ".h:" not in message
    assert "[ONNXRuntimeError]" not in message


def test_input_validation(make_model: ModelFactory) -> None:
    engine = OnnxEngine(_add_model(make_model), EngineOptions())
    a = np.ones((1, 2), np.float32)
    with pytest.raises(EngineError, match="missing input 'b'"):
        engine.infer({"a": a})
    with pytest.raises(EngineError, match="unknown input 'c'"):
        engine.infer({"a": a, "b": a, "c": a})
    with pytest.raises(EngineError, match="float64"):
        engine.infer({"a": a, "b": a.astype(np.float64)})
    # Big-endian float32 is still float32: swapped, not refused.
    out = engine.infer({"a": a.astype(">f4"), "b": a}, ["y"])
    np.testing.assert_array_equal(out["y"], a + a)
    # Non-contiguous views are fine.
    wide = np.arange(12, dtype=np.float32).reshape(3, 4)
    view = wide[:, ::2]
    out = engine.infer({"a": view, "b": np.zeros_like(view)}, ["y"])
    np.testing.assert_array_equal(out["y"], view)


@pytest.mark.parametrize(
    "content", [b"this is not an onnx model" * 4, b""], ids=["garbage", "empty"]
)
def test_corrupt_file_is_engine_error_without_path(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "secret-dir" / "model.onnx"
    path.parent.mkdir()
    path.write_bytes(content)
    with pytest.raises(EngineError) as info:
        OnnxEngine(path, EngineOptions())
    message = str(info.value)
    assert message.startswith("ONNX model could not be loaded: ")
    assert "secret-dir" not in message and str(tmp_path) not in message
    assert "Traceback" not in message


def test_missing_file_and_directory(tmp_path: Path) -> None:
    for path in (tmp_path / "absent.onnx", tmp_path):
        with pytest.raises(EngineError, match="could not be loaded") as info:
            OnnxEngine(path, EngineOptions())
        assert str(tmp_path) not in str(info.value)


def test_invalid_graph_message_has_no_path(make_model: ModelFactory, tmp_path: Path) -> None:
    path = make_model(
        [helper.make_node("NoSuchOp", ["x"], ["y"])],
        [("x", TensorProto.FLOAT, [1])],
        [("y", TensorProto.FLOAT, [1])],
    )
    with pytest.raises(EngineError, match="NoSuchOp") as info:
        OnnxEngine(path, EngineOptions())
    assert str(tmp_path) not in str(info.value)


def test_non_tensor_output_is_refused(make_model: ModelFactory) -> None:
    path = make_model(
        [helper.make_node("SequenceConstruct", ["x"], ["seq"])],
        [("x", TensorProto.FLOAT, [2])],
        [],
    )
    # make_tensor_value_info cannot describe a sequence; patch the graph output in.
    model = onnx.load(path)
    model.graph.output.append(
        helper.make_value_info(
            "seq",
            helper.make_sequence_type_proto(helper.make_tensor_type_proto(TensorProto.FLOAT, [2])),
        )
    )
    path.write_bytes(model.SerializeToString())
    with pytest.raises(EngineError, match=r"'seq' has type seq\(tensor\(float\)\)"):
        OnnxEngine(path, EngineOptions())


def test_close_is_idempotent_and_blocks_infer(make_model: ModelFactory) -> None:
    engine = OnnxEngine(_identity(make_model, TensorProto.FLOAT), EngineOptions())
    x = np.ones((1, 3), np.float32)
    assert engine.infer({"x": x})["y"].shape == (1, 3)
    engine.close()
    engine.close()
    assert engine.providers == []
    with pytest.raises(EngineError, match="unloaded"):
        engine.infer({"x": x})
    with OnnxEngine(_identity(make_model, TensorProto.FLOAT), EngineOptions()) as second:
        pass
    with pytest.raises(EngineError):
        second.infer({"x": x})


@pytest.mark.skipif(
    "CUDAExecutionProvider" in ort.get_available_providers(), reason="CUDA is really available"
)
def test_missing_provider_falls_back_to_cpu_with_warning(
    make_model: ModelFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="inferd.engines.onnx")
    options = EngineOptions(providers=("CUDAExecutionProvider",))
    engine = OnnxEngine(_identity(make_model, TensorProto.FLOAT), options)
    assert engine.providers == ["CPUExecutionProvider"]
    records = [r for r in caplog.records if r.name == "inferd.engines.onnx"]
    assert len(records) == 1
    assert records[0].levelno == logging.WARNING
    assert "CUDAExecutionProvider" in records[0].getMessage()
    assert "not available" in records[0].getMessage()
    x = np.ones((1, 3), np.float32)
    np.testing.assert_array_equal(engine.infer({"x": x})["y"], x)


def test_default_providers_are_cpu_without_warnings(
    make_model: ModelFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="inferd.engines.onnx")
    engine = OnnxEngine(_identity(make_model, TensorProto.FLOAT), EngineOptions())
    assert engine.providers == ["CPUExecutionProvider"]
    assert not caplog.records


def test_options_applied(make_model: ModelFactory) -> None:
    options = EngineOptions(concurrency=3, intra_op_threads=1, inter_op_threads=2)
    engine = OnnxEngine(_add_model(make_model), options)
    assert engine.max_concurrency == 3
    a = np.ones((2, 2), np.float32)
    np.testing.assert_array_equal(engine.infer({"a": a, "b": a})["y"], a * 2)


def test_concurrent_infer_from_threads(make_model: ModelFactory) -> None:
    engine = OnnxEngine(_add_model(make_model), EngineOptions(concurrency=8))
    start = threading.Barrier(8)

    def call(i: int) -> bool:
        rng = np.random.default_rng(i)
        a = rng.standard_normal((16, 32), dtype=np.float32)
        b = rng.standard_normal((16, 32), dtype=np.float32)
        start.wait()
        ok = True
        for _ in range(25):
            out = engine.infer({"a": a, "b": b})
            ok &= np.array_equal(out["y"], a + b) and np.array_equal(out["z"], a * 2)
        return ok

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(call, range(8)))


def test_clean_message() -> None:
    raw = (
        "[ONNXRuntimeError] : 1 : FAIL : Non-zero status code returned while running Gemm "
        "node. Name:'/fc1/Gemm' Status Message: /onnxruntime_src/onnxruntime/core/util/"
        "math_cpu.cc:42 void onnxruntime::math::Gemm(int, int) K == N was false. Mismatch "
        "reading /home/alice/models/x/1/model.onnx\nStacktrace:\n#0 frame /usr/lib/libort.so"
    )
    cleaned = _clean_message(raw, ["/home/alice/models/x/1/model.onnx"])
    assert cleaned == (
        "Non-zero status code returned while running Gemm node. Name:'/fc1/Gemm' "
        "Status Message: K == N was false. Mismatch reading <model>"
    )
    assert _clean_message("open C:\\Users\\bob\\m.onnx failed") == "open <path> failed"
    assert _clean_message("") == "unknown error"
    assert len(_clean_message("x" * 5000)) == 400
