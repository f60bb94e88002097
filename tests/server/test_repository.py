"""Model repository: discovery, config parsing, version policy, auto-complete,
validation against the model and engine options."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from inferd.engines.base import EngineOptions, Signature, TensorSpec
from inferd.protos import model_config_pb2
from inferd.server.repository import (
    ModelNotFoundError,
    ModelRepository,
    RepositoryError,
    complete_config,
    engine_options,
)

FP32 = np.dtype(np.float32)
INT64 = np.dtype(np.int64)


# --- helpers ------------------------------------------------------------------


def identity_model(path: Path, shape: list[int | str]) -> None:
    """x -> y, FP32; a str dim is dynamic."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "identity", [x], [y])
    _save(graph, path)


def add_model(path: Path, shape: list[int | str]) -> None:
    """a + b -> sum, FP32."""
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, shape)
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, shape)
    out = helper.make_tensor_value_info("sum", TensorProto.FLOAT, shape)
    graph = helper.make_graph([helper.make_node("Add", ["a", "b"], ["sum"])], "add", [a, b], [out])
    _save(graph, path)


def _save(graph: onnx.GraphProto, path: Path) -> None:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by every onnxruntime the project allows
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def make_model(
    root: Path,
    name: str,
    *,
    config: str | None = None,
    versions: tuple[int, ...] = (1,),
    shape: tuple[int | str, ...] = ("batch", 3),
    filename: str = "model.onnx",
) -> Path:
    directory = root / name
    directory.mkdir(parents=True)
    if config is not None:
        (directory / "config.pbtxt").write_text(config)
    for version in versions:
        identity_model(directory / str(version) / filename, list(shape))
    return directory


def sig(
    *inputs: TensorSpec, outputs: tuple[TensorSpec, ...] = (), batch: tuple[int, ...] = ()
) -> Signature:
    return Signature(inputs=tuple(inputs), outputs=outputs, batch_sizes=batch)


def spec(name: str, shape: tuple[int, ...], dtype: np.dtype = FP32) -> TensorSpec:
    return TensorSpec(name=name, dtype=dtype, shape=shape)


IDENTITY_DYNAMIC = sig(spec("x", (-1, 3)), outputs=(spec("y", (-1, 3)),))
ADD_FIXED = sig(spec("a", (2, 3)), spec("b", (2, 3)), outputs=(spec("sum", (2, 3)),))


def config_of(text: str) -> model_config_pb2.ModelConfig:
    from google.protobuf import text_format

    config = model_config_pb2.ModelConfig()
    text_format.Parse(text, config)
    return config


def error_of(exc_info: pytest.ExceptionInfo[RepositoryError], tmp_path: Path) -> str:
    message = str(exc_info.value)
    assert str(tmp_path) not in message
    assert str(tmp_path.resolve()) not in message
    return message


# --- a Triton-style repository --------------------------------------------------

TRITON_CONFIG = """
name: "classifier"
platform: "onnxruntime_onnx"
max_batch_size: 8
version_policy: { latest { num_versions: 2 } }
input [ { name: "x" data_type: TYPE_FP32 dims: [ 3 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ -1 ] } ]
dynamic_batching { preferred_batch_size: [ 4, 8 ] max_queue_delay_microseconds: 500 }
instance_group [ { count: 2 kind: KIND_CPU }, { kind: KIND_CPU } ]
parameters { key: "intra_op_thread_count" value: { string_value: "2" } }
parameters { key: "inter_op_thread_count" value: { string_value: "1" } }
optimization { execution_accelerators { cpu_execution_accelerator: [ { name: "openvino" } ] } }
"""


def test_triton_style_repository(tmp_path: Path) -> None:
    directory = make_model(tmp_path, "classifier", config=TRITON_CONFIG, versions=(1, 2, 3))
    (directory / "model_card.json").write_text(json.dumps({"owner": "ml-team"}))

    repo = ModelRepository(tmp_path)
    source = repo.source("classifier")

    assert source.name == "classifier"
    assert source.directory == directory
    assert source.platform == "onnxruntime_onnx"
    assert source.versions == {2: directory / "2" / "model.onnx", 3: directory / "3" / "model.onnx"}
    assert source.card == {"owner": "ml-team"}
    assert source.config.dynamic_batching.max_queue_delay_microseconds == 500

    completed = complete_config(source.config, IDENTITY_DYNAMIC)
    assert completed.max_batch_size == 8
    assert [(t.name, list(t.dims)) for t in completed.input] == [("x", [3])]
    assert [(t.name, list(t.dims)) for t in completed.output] == [("y", [-1])]
    # Everything auto-complete does not own survives unchanged.
    for field in (
        "dynamic_batching",
        "instance_group",
        "parameters",
        "optimization",
        "version_policy",
    ):
        assert getattr(completed, field) == getattr(source.config, field)
    assert completed is not source.config

    assert engine_options(completed) == EngineOptions(
        concurrency=3,
        intra_op_threads=2,
        inter_op_threads=1,
        providers=("OpenVINOExecutionProvider", "CPUExecutionProvider"),
        max_batch_size=8,
    )


def test_index_sorted_skipping_hidden_and_files(tmp_path: Path) -> None:
    for name in ("zeta", "alpha", ".hidden", ".git"):
        (tmp_path / name).mkdir()
    (tmp_path / "README.md").write_text("not a model")
    assert ModelRepository(tmp_path).index() == ["alpha", "zeta"]


def test_hidden_model_is_not_found(tmp_path: Path) -> None:
    make_model(tmp_path, ".staging")
    with pytest.raises(ModelNotFoundError):
        ModelRepository(tmp_path).source(".staging")


def test_root_must_be_a_directory(tmp_path: Path) -> None:
    with pytest.raises(RepositoryError) as exc_info:
        ModelRepository(tmp_path / "missing")
    assert "missing" in error_of(exc_info, tmp_path)
    (tmp_path / "file").write_text("")
    with pytest.raises(RepositoryError):
        ModelRepository(tmp_path / "file")


# --- version policy -------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("", [4]),
        ("version_policy: { latest { num_versions: 1 } }", [4]),
        ("version_policy: { latest { num_versions: 2 } }", [2, 4]),
        ("version_policy: { latest { num_versions: 10 } }", [1, 2, 4]),
        ("version_policy: { all { } }", [1, 2, 4]),
        ("version_policy: { specific { versions: [ 1, 4 ] } }", [1, 4]),
        ("version_policy: { specific { versions: [ 2, 2 ] } }", [2]),
    ],
)
def test_version_policy(tmp_path: Path, policy: str, expected: list[int]) -> None:
    make_model(tmp_path, "m", config=policy, versions=(1, 2, 4))
    assert sorted(ModelRepository(tmp_path).source("m").versions) == expected


def test_specific_version_that_does_not_exist(tmp_path: Path) -> None:
    make_model(tmp_path, "m", config="version_policy: { specific { versions: [ 1, 7 ] } }")
    with pytest.raises(RepositoryError) as exc_info:
        ModelRepository(tmp_path).source("m")
    message = error_of(exc_info, tmp_path)
    assert "'m'" in message and "7" in message


def test_latest_zero_versions_is_an_error(tmp_path: Path) -> None:
    make_model(tmp_path, "m", config="version_policy: { latest { } }")
    with pytest.raises(RepositoryError, match="num_versions"):
        ModelRepository(tmp_path).source("m")


def test_non_numeric_version_dirs_ignored(tmp_path: Path) -> None:
    directory = make_model(tmp_path, "m", versions=(3,))
    # Triton ignores names that are not numbers or that start with a zero.
    for odd in ("latest", "0", "07", "1.5", "-2", "\u0661", ".9"):
        identity_model(directory / odd / "model.onnx", ["batch", 3])
    (directory / "12").write_text("a file, not a version directory")
    source = ModelRepository(tmp_path).source("m")
    assert source.versions == {3: directory / "3" / "model.onnx"}


def test_version_dir_without_model_file(tmp_path: Path) -> None:
    directory = make_model(tmp_path, "m", versions=(1,))
    (directory / "2").mkdir()  # still being copied in
    assert ModelRepository(tmp_path).source("m").versions == {1: directory / "1" / "model.onnx"}

    (directory / "config.pbtxt").write_text("version_policy: { specific { versions: [ 2 ] } }")
    with pytest.raises(RepositoryError, match="version"):
        ModelRepository(tmp_path).source("m")


def test_no_loadable_version(tmp_path: Path) -> None:
    (tmp_path / "empty" / "1").mkdir(parents=True)
    (tmp_path / "empty" / "config.pbtxt").write_text('platform: "onnxruntime_onnx"')
    with pytest.raises(RepositoryError) as exc_info:
        ModelRepository(tmp_path).source("empty")
    message = error_of(exc_info, tmp_path)
    assert "no version of the model" in message and "'empty'" in message


# --- platform and model file ----------------------------------------------------


def test_platform_from_backend(tmp_path: Path) -> None:
    make_model(tmp_path, "m", config='backend: "onnxruntime"')
    source = ModelRepository(tmp_path).source("m")
    assert source.platform == "onnxruntime_onnx"
    assert source.config.platform == "onnxruntime_onnx"
    assert source.config.backend == "onnxruntime"


def test_platform_inferred_from_model_file(tmp_path: Path) -> None:
    make_model(tmp_path, "onnx_model")
    trt = tmp_path / "trt_model" / "1"
    trt.mkdir(parents=True)
    (trt / "model.plan").write_bytes(b"serialized engine")
    repo = ModelRepository(tmp_path)
    assert repo.source("onnx_model").platform == "onnxruntime_onnx"
    trt_source = repo.source("trt_model")
    assert trt_source.platform == "tensorrt_plan"
    assert trt_source.versions == {1: trt / "model.plan"}


def test_platform_ambiguous_or_unknown(tmp_path: Path) -> None:
    directory = make_model(tmp_path, "both", versions=(1,))
    (directory / "2").mkdir()
    (directory / "2" / "model.plan").write_bytes(b"engine")
    make_model(tmp_path, "torch", config='platform: "pytorch_libtorch"')
    make_model(tmp_path, "clash", config='platform: "tensorrt_plan" backend: "onnxruntime"')
    repo = ModelRepository(tmp_path)
    with pytest.raises(RepositoryError, match="cannot tell the platform"):
        repo.source("both")
    with pytest.raises(RepositoryError, match="pytorch_libtorch"):
        repo.source("torch")
    with pytest.raises(RepositoryError, match="does not match"):
        repo.source("clash")


def test_default_model_filename(tmp_path: Path) -> None:
    directory = make_model(
        tmp_path, "m", config='default_model_filename: "net.onnx"', filename="net.onnx"
    )
    source = ModelRepository(tmp_path).source("m")
    assert source.platform == "onnxruntime_onnx"
    assert source.versions == {1: directory / "1" / "net.onnx"}


@pytest.mark.parametrize("filename", ["../../secret.onnx", "/etc/passwd", "..", "sub/model.onnx"])
def test_default_model_filename_must_stay_in_version_dir(tmp_path: Path, filename: str) -> None:
    make_model(
        tmp_path, "m", config=f'platform: "onnxruntime_onnx" default_model_filename: "{filename}"'
    )
    with pytest.raises(RepositoryError, match="plain file name"):
        ModelRepository(tmp_path).source("m")


# --- config parsing --------------------------------------------------------------


def test_missing_config_starts_empty_with_name(tmp_path: Path) -> None:
    make_model(tmp_path, "auto")
    config = ModelRepository(tmp_path).source("auto").config
    assert config.name == "auto"
    assert not config.input and not config.output and config.max_batch_size == 0


def test_name_mismatch(tmp_path: Path) -> None:
    make_model(tmp_path, "m", config='name: "other"')
    with pytest.raises(RepositoryError) as exc_info:
        ModelRepository(tmp_path).source("m")
    message = error_of(exc_info, tmp_path)
    assert "'m'" in message and "'other'" in message


def test_parse_error_names_model_and_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    make_model(tmp_path, "broken", config='name: "broken"\nmax_batch_size: 4\n  bogus_field: 1\n')
    with pytest.raises(RepositoryError) as exc_info:
        ModelRepository(tmp_path).source("broken")
    message = error_of(exc_info, tmp_path)
    assert "'broken'" in message
    assert "line 3" in message
    assert "broken/config.pbtxt" in message
    # The parser's detail quotes the file: the operator's log gets it, callers do not.
    assert "bogus_field" not in message
    assert "bogus_field" in caplog.text


def test_config_not_utf8(tmp_path: Path) -> None:
    directory = make_model(tmp_path, "m")
    (directory / "config.pbtxt").write_bytes(b'name: "\xff"')
    with pytest.raises(RepositoryError, match="UTF-8"):
        ModelRepository(tmp_path).source("m")


# --- names from callers ------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["../outside", "..", ".", "/etc", "", "a/b", "$(rm -rf)", "x;ls", "m/../m", "M", "m\x00"],
)
def test_untrusted_names_are_not_found(tmp_path: Path, name: str) -> None:
    root = tmp_path / "repo"
    make_model(root, "m")
    make_model(tmp_path, "outside")  # a real model dir just outside the root
    with pytest.raises(ModelNotFoundError) as exc_info:
        ModelRepository(root).source(name)
    message = error_of(exc_info, tmp_path)
    assert "not in the repository" in message


def test_long_name_is_truncated_in_message(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError) as exc_info:
        ModelRepository(tmp_path).source("n" * 10_000)
    assert len(str(exc_info.value)) < 300


# --- model card ------------------------------------------------------------------------


def test_model_card_flattened(tmp_path: Path) -> None:
    directory = make_model(tmp_path, "m")
    card = {
        "owner": "ml-team",
        "description": "iris classifier",
        "intended_use": "demos",
        "data_version": 3,
        "training_commit": "abc123",
        "metrics": {"accuracy": 0.93, "f1": 0.9, "calibrated": True},
        "unknown_key": {"ignored": 1},
    }
    (directory / "model_card.json").write_text(json.dumps(card))
    assert ModelRepository(tmp_path).source("m").card == {
        "owner": "ml-team",
        "description": "iris classifier",
        "intended_use": "demos",
        "data_version": "3",
        "training_commit": "abc123",
        "metrics.accuracy": "0.93",
        "metrics.f1": "0.9",
        "metrics.calibrated": "true",
    }


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('"a string"', "JSON object"),
        ('{"metrics": [1]}', "'metrics'"),
        ('{"owner": {"nested": 1}}', "'owner'"),
        ('{"metrics": {"acc": [0.9]}}', "'metrics.acc'"),
    ],
)
def test_bad_model_card(tmp_path: Path, text: str, problem: str) -> None:
    directory = make_model(tmp_path, "m")
    (directory / "model_card.json").write_text(text)
    with pytest.raises(RepositoryError) as exc_info:
        ModelRepository(tmp_path).source("m")
    message = error_of(exc_info, tmp_path)
    assert problem in message and "'m'" in message


# --- complete_config ----------------------------------------------------------------------


def test_autocomplete_dynamic_batch() -> None:
    config = complete_config(config_of('name: "m"'), IDENTITY_DYNAMIC)
    assert config.max_batch_size == 64
    assert [(t.name, t.data_type, list(t.dims)) for t in config.input] == [
        ("x", model_config_pb2.TYPE_FP32, [3])
    ]
    assert [(t.name, t.data_type, list(t.dims)) for t in config.output] == [
        ("y", model_config_pb2.TYPE_FP32, [3])
    ]


def test_autocomplete_default_max_batch_size_and_engine_batch_sizes() -> None:
    assert (
        complete_config(config_of(""), IDENTITY_DYNAMIC, default_max_batch_size=16).max_batch_size
        == 16
    )
    limited = sig(spec("x", (-1, 3)), outputs=(spec("y", (-1, 3)),), batch=(1, 2, 4, 8))
    assert complete_config(config_of(""), limited).max_batch_size == 8
    no_batching = complete_config(config_of(""), IDENTITY_DYNAMIC, default_max_batch_size=0)
    assert no_batching.max_batch_size == 0
    assert list(no_batching.input[0].dims) == [-1, 3]


def test_autocomplete_fixed_dims_no_batching() -> None:
    config = complete_config(config_of('name: "add"'), ADD_FIXED)
    assert config.max_batch_size == 0
    assert [(t.name, list(t.dims)) for t in config.input] == [("a", [2, 3]), ("b", [2, 3])]
    assert [(t.name, list(t.dims)) for t in config.output] == [("sum", [2, 3])]


def test_autocomplete_mixed_first_dims_no_batching() -> None:
    mixed = sig(spec("x", (-1, 3)), outputs=(spec("y", (3,)),))
    config = complete_config(config_of(""), mixed)
    assert config.max_batch_size == 0
    assert list(config.input[0].dims) == [-1, 3]


def test_autocomplete_other_dtypes_and_platform_from_backend() -> None:
    signature = sig(spec("ids", (-1, 5), INT64), outputs=(spec("text", (-1,), np.dtype(object)),))
    config = complete_config(config_of('backend: "onnxruntime"'), signature)
    assert config.platform == "onnxruntime_onnx"
    assert config.input[0].data_type == model_config_pb2.TYPE_INT64
    assert config.output[0].data_type == model_config_pb2.TYPE_STRING
    assert list(config.output[0].dims) == []


def test_explicit_max_batch_size_fills_missing_outputs_without_batch_dim() -> None:
    config = complete_config(
        config_of('max_batch_size: 4 input [ { name: "x" data_type: TYPE_FP32 dims: [ 3 ] } ]'),
        IDENTITY_DYNAMIC,
    )
    assert config.max_batch_size == 4
    assert [(t.name, list(t.dims)) for t in config.output] == [("y", [3])]


def test_configured_tensors_validated_and_kept() -> None:
    text = """
    max_batch_size: 0
    input [ { name: "a" data_type: TYPE_FP32 dims: [ 2, -1 ] },
            { name: "b" data_type: TYPE_FP32 dims: [ 2, 3 ] } ]
    output [ { name: "sum" data_type: TYPE_FP32 dims: [ -1, 3 ] label_filename: "labels.txt" } ]
    """
    original = config_of(text)
    assert complete_config(original, ADD_FIXED) == original


def test_reshape_is_compared_with_the_model() -> None:
    text = """
    max_batch_size: 8
    input [ { name: "x" data_type: TYPE_FP32 dims: [ 1, 3 ] reshape: { shape: [ 3 ] } } ]
    output [ { name: "y" data_type: TYPE_FP32 dims: [ 3 ] } ]
    """
    assert complete_config(config_of(text), IDENTITY_DYNAMIC).input[0].reshape.shape == [3]


def t(name: str, dims: str = "[2, 3]", data_type: str = "TYPE_FP32") -> str:
    """One config tensor in text format."""
    return f'{{ name: "{name}" data_type: {data_type} dims: {dims} }}'


B_OK = t("b")


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        (f"input [ {t('a', data_type='TYPE_INT32')}, {B_OK} ]", ["'a'", "TYPE_INT32", "TYPE_FP32"]),
        (f"input [ {t('a', '[2, 4]')}, {B_OK} ]", ["'a'", "[2, 4]", "[2, 3]"]),
        (f"input [ {t('a', '[6]')}, {B_OK} ]", ["'a'", "[6]"]),
        (f"input [ {t('a')}, {B_OK}, {t('c')} ]", ["'c'", "no such input"]),
        (f"input [ {t('a')} ]", ["'b'", "not in config.pbtxt"]),
        (f"output [ {t('diff')} ]", ["'diff'", "no such output"]),
        (f"output [ {t('sum', data_type='TYPE_FP16')} ]", ["'sum'", "TYPE_FP16"]),
        (f"input [ {t('a', data_type='TYPE_INVALID')}, {B_OK} ]", ["TYPE_INVALID"]),
        (f"input [ {t('a')}, {t('a')}, {B_OK} ]", ["more than once"]),
        ("max_batch_size: 4", ["'a'", "batch dimension"]),
        ("max_batch_size: -1", ["negative"]),
    ],
)
def test_config_model_mismatch(text: str, fragments: list[str]) -> None:
    with pytest.raises(RepositoryError) as exc_info:
        complete_config(config_of('name: "add" ' + text), ADD_FIXED)
    message = str(exc_info.value)
    assert "'add'" in message
    for fragment in fragments:
        assert fragment in message


def test_batch_dims_excluded_from_config_dims() -> None:
    # With batching the config's [3] is the model's [-1, 3] minus the batch.
    ok = 'max_batch_size: 8 input [ { name: "x" data_type: TYPE_FP32 dims: [ 3 ] } ]'
    assert complete_config(config_of(ok), IDENTITY_DYNAMIC).max_batch_size == 8
    bad = 'name: "m" max_batch_size: 8 input [ { name: "x" data_type: TYPE_FP32 dims: [ -1, 3 ] } ]'
    with pytest.raises(RepositoryError, match="without the batch dimension"):
        complete_config(config_of(bad), IDENTITY_DYNAMIC)


def test_max_batch_size_against_engine_limits() -> None:
    fixed_batch = sig(spec("x", (8, 3)), outputs=(spec("y", (8, 3)),), batch=(8,))
    assert complete_config(config_of("max_batch_size: 8"), fixed_batch).max_batch_size == 8
    limited = sig(spec("x", (-1, 3)), outputs=(spec("y", (-1, 3)),), batch=(1, 4))
    with pytest.raises(RepositoryError, match="largest batch"):
        complete_config(config_of("max_batch_size: 8"), limited)


# --- engine_options ----------------------------------------------------------------------


def accelerators(gpu: str = "", cpu: str = "") -> str:
    parts = [f'gpu_execution_accelerator: [ {{ name: "{gpu}" }} ]' if gpu else ""]
    parts.append(f'cpu_execution_accelerator: [ {{ name: "{cpu}" }} ]' if cpu else "")
    return f"optimization {{ execution_accelerators {{ {' '.join(parts)} }} }}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", EngineOptions(concurrency=1, providers=("CPUExecutionProvider",))),
        (
            "instance_group [ { count: 4 } ]",
            EngineOptions(concurrency=4, providers=("CPUExecutionProvider",)),
        ),
        (
            "instance_group [ { count: 2 kind: KIND_GPU } ]",
            EngineOptions(
                concurrency=2, providers=("CUDAExecutionProvider", "CPUExecutionProvider")
            ),
        ),
        (
            "instance_group [ { kind: KIND_GPU } ] " + accelerators(gpu="tensorrt"),
            EngineOptions(
                concurrency=1,
                providers=(
                    "TensorrtExecutionProvider",
                    "CUDAExecutionProvider",
                    "CPUExecutionProvider",
                ),
            ),
        ),
        (
            accelerators(gpu="cuda", cpu="openvino"),
            EngineOptions(
                providers=(
                    "CUDAExecutionProvider",
                    "OpenVINOExecutionProvider",
                    "CPUExecutionProvider",
                )
            ),
        ),
        (
            # GPU accelerators do not apply to CPU-only instances (Triton).
            "instance_group [ { count: 3 kind: KIND_CPU } ] " + accelerators(gpu="tensorrt"),
            EngineOptions(concurrency=3, providers=("CPUExecutionProvider",)),
        ),
        (
            'parameters { key: "intra_op_thread_count" value: { string_value: " 4 " } }',
            EngineOptions(intra_op_threads=4, providers=("CPUExecutionProvider",)),
        ),
    ],
)
def test_engine_options(text: str, expected: EngineOptions) -> None:
    assert engine_options(config_of('name: "m" ' + text)) == expected


@pytest.mark.parametrize("value", ["", "two", "-1", "1.5", "\u0661", "99999999"])
def test_engine_options_bad_thread_count(value: str) -> None:
    parameter = f'key: "inter_op_thread_count" value: {{ string_value: "{value}" }}'
    config = config_of(f'name: "m" parameters {{ {parameter} }}')
    with pytest.raises(RepositoryError) as exc_info:
        engine_options(config)
    message = str(exc_info.value)
    assert "'m'" in message and "inter_op_thread_count" in message


def test_engine_options_unknown_accelerator_and_negative_count() -> None:
    with pytest.raises(RepositoryError, match="'rocm'"):
        engine_options(config_of(accelerators(gpu="rocm")))
    with pytest.raises(RepositoryError, match="'dnnl'"):
        engine_options(config_of(accelerators(cpu="dnnl")))
    with pytest.raises(RepositoryError, match="negative"):
        engine_options(config_of("instance_group [ { count: -1 } ]"))


# --- error messages never leak the filesystem ---------------------------------------------


def test_no_absolute_paths_in_errors(tmp_path: Path) -> None:
    make_model(tmp_path, "parse", config="max_batch_size: {")
    make_model(tmp_path, "named", config='name: "x"')
    make_model(tmp_path, "card").joinpath("model_card.json").write_text("{")
    make_model(tmp_path, "policy", config="version_policy: { specific { versions: [ 9 ] } }")
    (tmp_path / "noversion").mkdir()
    (tmp_path / "unreadable").mkdir()
    (tmp_path / "unreadable" / "config.pbtxt").mkdir()  # reading it fails with OSError
    repo = ModelRepository(tmp_path)
    for name in (
        "parse",
        "named",
        "card",
        "policy",
        "noversion",
        "unreadable",
        "../" + tmp_path.name,
    ):
        with pytest.raises(RepositoryError) as exc_info:
            repo.source(name)
        error_of(exc_info, tmp_path)


# --- with the real engine, once engines/onnx.py exists -------------------------------------


def test_real_engine_signature(tmp_path: Path) -> None:
    onnx_engine = pytest.importorskip("inferd.engines.onnx")
    make_model(tmp_path, "identity")
    add_model(tmp_path / "add" / "1" / "model.onnx", [2, 3])
    repo = ModelRepository(tmp_path)

    identity = repo.source("identity")
    with onnx_engine.OnnxEngine(identity.versions[1], engine_options(identity.config)) as engine:
        config = complete_config(identity.config, engine.signature)
    assert config.max_batch_size == 64
    assert [(t.name, t.data_type, list(t.dims)) for t in config.input] == [
        ("x", model_config_pb2.TYPE_FP32, [3])
    ]

    add = repo.source("add")
    with onnx_engine.OnnxEngine(add.versions[1], engine_options(add.config)) as engine:
        config = complete_config(add.config, engine.signature)
    assert config.max_batch_size == 0
    assert [(t.name, list(t.dims)) for t in config.input] == [("a", [2, 3]), ("b", [2, 3])]
    assert [t.name for t in config.output] == ["sum"]
