"""Version policies, broken models, auto-complete and statistics, end to end:
a Triton-style repository on disk, a live server, our client.

Every version of a test model computes ``y = x + version``, so each answer
shows which version really served it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnx
import pytest
from conftest import ServerThread
from onnx import TensorProto, helper, numpy_helper

from inferd.clients import InferenceClient, InferenceServerError

MakeServer = Callable[..., ServerThread]

X = np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)

CONFIG = """
name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: 8
input {{ name: "x" data_type: TYPE_FP32 dims: [ 2 ] }}
output {{ name: "y" data_type: TYPE_FP32 dims: [ 2 ] }}
{extra}
"""

#: No absolute path may reach a caller, in any message or reason.
_ABS_PATH = re.compile(r"(?<![\w.])/(?:tmp|home|root|usr|var|work|opt|srv)(?:/|\b)")


def plus_model(path: Path, add: float, shape: Sequence[int | str] = ("batch", 2)) -> None:
    """x FP32 -> y = x + add."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, list(shape))
    constant = numpy_helper.from_array(np.array(add, dtype=np.float32), "add")
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "add"], ["y"])], "plus", [x], [y], [constant]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def write_model(
    root: Path,
    name: str,
    versions: Sequence[int] = (1, 2, 3),
    *,
    extra: str = "",
    config: str | None = None,
) -> None:
    """A model whose version N answers x + N; ``config`` replaces the default one."""
    for v in versions:
        plus_model(root / name / str(v) / "model.onnx", v)
    text = CONFIG.format(name=name, extra=extra) if config is None else config
    (root / name).mkdir(parents=True, exist_ok=True)
    (root / name / "config.pbtxt").write_text(text)


def assert_no_path(text: str, root: Path) -> None:
    assert str(root) not in text
    assert not _ABS_PATH.search(text), text
    assert "Traceback" not in text and ".py" not in text


def answered_by(client: InferenceClient, name: str, version: str = "") -> str:
    """The version whose arithmetic produced the answer (checked against the
    version the response names)."""
    result = client.infer(name, {"x": X}, version=version)
    offsets = np.unique(result["y"] - X)
    assert offsets.size == 1, offsets
    assert result.model_version == str(int(offsets[0]))
    return result.model_version


# --- version policies ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "ready"),
    [
        pytest.param("", [3], id="default-latest-1"),
        pytest.param("version_policy { latest { num_versions: 2 } }", [2, 3], id="latest-2"),
        pytest.param("version_policy { latest { num_versions: 9 } }", [1, 2, 3], id="latest-9"),
        pytest.param("version_policy { all { } }", [1, 2, 3], id="all"),
        pytest.param("version_policy { specific { versions: [ 1, 3 ] } }", [1, 3], id="specific"),
        pytest.param("version_policy { specific { versions: [ 2 ] } }", [2], id="specific-old"),
    ],
)
def test_version_policy_selects_the_serving_versions(
    tmp_path: Path, make_server: MakeServer, policy: str, ready: list[int]
) -> None:
    write_model(tmp_path, "plus", extra=policy)
    # Not versions: a dir without model file (still being copied in), a
    # leading zero, a non-number. None of them may be picked.
    (tmp_path / "plus" / "4").mkdir()
    plus_model(tmp_path / "plus" / "01" / "model.onnx", 100)
    plus_model(tmp_path / "plus" / "latest" / "model.onnx", 200)
    server = make_server(tmp_path)

    with InferenceClient(server.address) as client:
        meta = client.model_metadata("plus")
        assert meta["versions"] == [str(v) for v in ready]
        index = client.repository_index()
        assert [(m["version"], m["state"]) for m in index] == [(str(v), "READY") for v in ready]
        stats = client.model_statistics("plus")["model_stats"]
        assert [s["version"] for s in stats] == [str(v) for v in ready]

        # No version: the highest ready one.
        assert answered_by(client, "plus") == str(max(ready))
        for v in range(1, 5):
            assert client.is_model_ready("plus", str(v)) is (v in ready)
            if v in ready:
                assert answered_by(client, "plus", str(v)) == str(v)
                assert client.model_metadata("plus", str(v))["versions"] == meta["versions"]
            else:
                with pytest.raises(InferenceServerError) as info:
                    client.infer("plus", {"x": X}, version=str(v))
                assert info.value.code == grpc.StatusCode.NOT_FOUND
                assert f"version {v}" in info.value.details
                assert "plus" in info.value.details
        for not_a_version in ("01", "latest"):
            # "01" parses as 1; it must never reach the directory named "01".
            if not_a_version == "01" and 1 in ready:
                assert answered_by(client, "plus", "01") == "1"
                continue
            with pytest.raises(InferenceServerError) as info:
                client.infer("plus", {"x": X}, version=not_a_version)
            assert info.value.code == grpc.StatusCode.NOT_FOUND


def test_each_version_keeps_its_own_statistics(tmp_path: Path, make_server: MakeServer) -> None:
    write_model(tmp_path, "plus", extra="version_policy { all { } }")
    server = make_server(tmp_path)
    with InferenceClient(server.address) as client:
        for version in ("1", "1", "3", ""):
            client.infer("plus", {"x": X}, version=version)
        stats = {s["version"]: s for s in client.model_statistics("plus")["model_stats"]}
        assert stats["1"]["inference_count"] == 4  # two requests of two rows
        assert stats["2"]["inference_count"] == 0
        assert stats["3"]["inference_count"] == 4  # "3" and the unversioned one
        assert stats["2"]["last_inference"] == 0
        (only_2,) = client.model_statistics("plus", "2")["model_stats"]
        assert only_2["version"] == "2" and only_2["inference_stats"]["success"]["count"] == 0


# --- broken models -------------------------------------------------------------------


def test_broken_models_leave_the_others_serving(tmp_path: Path, make_server: MakeServer) -> None:
    write_model(tmp_path, "good", [1])
    write_model(tmp_path, "bad_syntax", [1], config='name: "bad_syntax"\nmax_batch_size: [oops\n')
    write_model(
        tmp_path,
        "bad_type",
        [1],
        config=CONFIG.format(name="bad_type", extra="").replace("TYPE_FP32", "TYPE_INT64", 1),
    )
    write_model(tmp_path, "bad_specific", [1], extra="version_policy { specific { versions: 5 } }")
    write_model(tmp_path, "bad_onnx", [])
    (tmp_path / "bad_onnx" / "1").mkdir()
    (tmp_path / "bad_onnx" / "1" / "model.onnx").write_bytes(b"this is not an onnx model")
    server = make_server(tmp_path)

    with InferenceClient(server.address) as client:
        assert answered_by(client, "good") == "1"
        assert client.is_model_ready("good")
        assert not client.is_server_ready()  # not every model has a ready version

        index = {m["name"]: m for m in client.repository_index()}
        assert set(index) == {"good", "bad_syntax", "bad_type", "bad_specific", "bad_onnx"}
        assert index["good"]["state"] == "READY" and index["good"]["reason"] == ""
        reasons = {
            # Config unreadable or policy unsatisfiable: the model as a whole.
            "bad_syntax": ("", "bad_syntax/config.pbtxt line 2"),
            "bad_specific": ("", "version(s) 5"),
            # The config is fine but a version fails against its model file.
            "bad_type": ("1", "input 'x': config data_type TYPE_INT64"),
            "bad_onnx": ("1", "could not be loaded"),
        }
        for name, (version, mention) in reasons.items():
            entry = index[name]
            assert (entry["version"], entry["state"]) == (version, "UNAVAILABLE"), entry
            assert mention in entry["reason"], entry
            assert_no_path(entry["reason"], tmp_path)
        assert [m["name"] for m in client.repository_index(ready=True)] == ["good"]

        for name in reasons:
            assert not client.is_model_ready(name)
            with pytest.raises(InferenceServerError) as info:
                client.infer(name, {"x": X})
            assert info.value.code == grpc.StatusCode.UNAVAILABLE
            assert name in info.value.details
            assert_no_path(info.value.details, tmp_path)


def truncate(path: Path) -> None:
    """Cut a model file in half, as an interrupted copy leaves it."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_broken_newest_version_at_start_serves_the_previous_one(
    tmp_path: Path, make_server: MakeServer
) -> None:
    write_model(tmp_path, "plus", [1, 2])
    truncate(tmp_path / "plus" / "2" / "model.onnx")
    server = make_server(tmp_path)
    with InferenceClient(server.address) as client:
        assert answered_by(client, "plus") == "1"
        assert client.is_model_ready("plus")
        assert client.is_server_ready()
        rows = {(m["version"], m["state"]): m["reason"] for m in client.repository_index()}
        assert rows[("1", "READY")] == ""
        assert "could not be loaded" in rows[("2", "UNAVAILABLE")]
        assert_no_path(rows[("2", "UNAVAILABLE")], tmp_path)
        with pytest.raises(InferenceServerError) as info:
            client.infer("plus", {"x": X}, version="2")
        assert info.value.code == grpc.StatusCode.NOT_FOUND


def test_latest_two_with_the_newest_broken_serves_the_two_before(
    tmp_path: Path, make_server: MakeServer
) -> None:
    write_model(tmp_path, "plus", [1, 2, 3], extra="version_policy { latest { num_versions: 2 } }")
    truncate(tmp_path / "plus" / "3" / "model.onnx")
    server = make_server(tmp_path)
    with InferenceClient(server.address) as client:
        assert answered_by(client, "plus") == "2"
        assert answered_by(client, "plus", "1") == "1"
        states = {m["version"]: m["state"] for m in client.repository_index()}
        assert states == {"1": "READY", "2": "READY", "3": "UNAVAILABLE"}


def test_specific_policy_gets_no_stand_in(tmp_path: Path, make_server: MakeServer) -> None:
    # The operator named the version: an older one must not answer instead.
    write_model(tmp_path, "plus", [1, 2], extra="version_policy { specific { versions: 2 } }")
    truncate(tmp_path / "plus" / "2" / "model.onnx")
    server = make_server(tmp_path)
    with InferenceClient(server.address) as client:
        assert not client.is_model_ready("plus")
        assert "1" not in {m["version"] for m in client.repository_index()}


# --- auto-complete ---------------------------------------------------------------------


def test_model_without_config_is_auto_completed(tmp_path: Path, make_server: MakeServer) -> None:
    plus_model(tmp_path / "auto" / "1" / "model.onnx", 1)
    plus_model(tmp_path / "auto" / "2" / "model.onnx", 2)
    plus_model(tmp_path / "fixed" / "1" / "model.onnx", 1, shape=(3, 2))  # no batch dim
    server = make_server(tmp_path)

    with InferenceClient(server.address) as client:
        config = client.model_config("auto")
        assert config["name"] == "auto"
        assert config["platform"] == "onnxruntime_onnx"
        assert config["max_batch_size"] == 64  # ServerConfig.default_max_batch_size
        assert [(t["name"], t["data_type"], t["dims"]) for t in config["input"]] == [
            ("x", "TYPE_FP32", [2])
        ]
        assert [(t["name"], t["data_type"], t["dims"]) for t in config["output"]] == [
            ("y", "TYPE_FP32", [2])
        ]
        meta = client.model_metadata("auto")
        assert meta["versions"] == ["2"]  # the default policy without a config too
        assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}]
        assert answered_by(client, "auto") == "2"

        fixed = client.model_config("fixed")
        assert fixed["max_batch_size"] == 0
        assert fixed["input"][0]["dims"] == [3, 2]
        result = client.infer("fixed", {"x": np.ones((3, 2), np.float32)})
        np.testing.assert_array_equal(result["y"], np.full((3, 2), 2.0, np.float32))
        with pytest.raises(InferenceServerError) as info:
            client.infer("fixed", {"x": np.ones((1, 3, 2), np.float32)})  # no batch dim to add
        assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_auto_complete_honours_default_max_batch_size(
    tmp_path: Path, make_server: MakeServer
) -> None:
    plus_model(tmp_path / "auto" / "1" / "model.onnx", 1)
    server = make_server(tmp_path, default_max_batch_size=4)
    with InferenceClient(server.address) as client:
        assert client.model_config("auto")["max_batch_size"] == 4
        client.infer("auto", {"x": np.zeros((4, 2), np.float32)})
        with pytest.raises(InferenceServerError) as info:
            client.infer("auto", {"x": np.zeros((5, 2), np.float32)})
        assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "max_batch_size 4" in info.value.details


# --- statistics ----------------------------------------------------------------------


def _stats(client: InferenceClient, name: str) -> dict[str, Any]:
    (stats,) = client.model_statistics(name)["model_stats"]
    return stats


def test_statistics_count_rows_requests_and_failures(
    tmp_path: Path, make_server: MakeServer
) -> None:
    write_model(tmp_path, "counted", [1])
    server = make_server(tmp_path)
    rows = [1, 3, 5, 2]
    with InferenceClient(server.address) as client:
        fresh = _stats(client, "counted")
        assert fresh["inference_count"] == fresh["execution_count"] == 0  # warmup not counted
        assert fresh["last_inference"] == 0

        for n in rows:
            client.infer("counted", {"x": np.zeros((n, 2), np.float32)})
        stats = _stats(client, "counted")
        assert stats["name"] == "counted"
        assert stats["version"] == "1"
        assert stats["inference_count"] == sum(rows)
        assert 1 <= stats["execution_count"] <= len(rows)
        infer = stats["inference_stats"]
        assert infer["success"]["count"] == len(rows)
        assert infer["success"]["ns"] > 0
        assert infer["fail"]["count"] == 0
        assert infer["compute_infer"]["count"] == len(rows)  # once per request
        # Batch statistics count executions by their real (unpadded) size.
        executed = sum(b["batch_size"] * b["compute_infer"]["count"] for b in stats["batch_stats"])
        assert executed == sum(rows)
        assert stats["last_inference"] > 0

        # A request that resolves to the model and then fails is a failure...
        with pytest.raises(InferenceServerError):
            client.infer("counted", {"x": np.zeros((1, 3), np.float32)})
        # ...one that never resolves (unknown version or model) is not its business.
        with pytest.raises(InferenceServerError):
            client.infer("counted", {"x": np.zeros((1, 2), np.float32)}, version="2")
        with pytest.raises(InferenceServerError):
            client.infer("uncounted", {"x": np.zeros((1, 2), np.float32)})

        after = _stats(client, "counted")
        assert after["inference_stats"]["fail"]["count"] == 1
        assert after["inference_stats"]["fail"]["ns"] > 0
        assert after["inference_stats"]["success"] == infer["success"]
        assert after["inference_count"] == sum(rows)
        assert after["execution_count"] == stats["execution_count"]

        with pytest.raises(InferenceServerError) as info:
            client.model_statistics("counted", "2")
        assert info.value.code == grpc.StatusCode.NOT_FOUND
        with pytest.raises(InferenceServerError) as info:
            client.model_statistics("uncounted")
        assert info.value.code == grpc.StatusCode.NOT_FOUND
