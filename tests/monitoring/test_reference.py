"""The reference file format, the input-file reader behind
``inferd monitor reference``, and a server's fallback to capturing."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from monitoring_helpers import MODEL, digits_repository, metric, wait_until

from inferd.clients import InferenceClient
from inferd.server.monitoring.cli import main as monitor_main
from inferd.server.monitoring.readers import InputFileError, read_inputs
from inferd.server.monitoring.reference import (
    REFERENCE_PATH,
    ReferenceError,
    build,
    load,
    parse,
)


def test_a_reference_survives_json_with_nan_features_as_null(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 3)).astype(np.float32)
    x[:, 2] = np.nan  # a feature never filled in
    x[:50, 0] = np.nan  # 10% missing
    scores = rng.dirichlet(np.ones(4), 500).astype(np.float32)
    reference = build("m", {"x": x}, {"scores": scores}, 500, "test")
    path = tmp_path / "reference.json"
    reference.save(path)
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text  # strict JSON
    data = json.loads(text)
    (x_json,) = [t for t in data["tensors"] if t["name"] == "x"]
    assert x_json["min"][2] is None and x_json["null_share"] == pytest.approx([0.1, 0.0, 1.0])
    again = load(path)
    for key, tensor in reference.tensors.items():
        other = again.tensors[key]
        assert np.allclose(tensor.edges, other.edges) and np.allclose(tensor.shares, other.shares)
        assert np.allclose(tensor.minimum, other.minimum, equal_nan=True)
    classes = again.tensors["output:scores"].classes
    assert classes is not None and math.isclose(classes.sum(), 1.0)
    assert again.tensors["input:x"].classes is None  # inputs have no classes


def test_other_format_versions_and_bad_shapes_are_refused_with_the_reason() -> None:
    good = build("m", {"x": np.ones((10, 2))}, {}, 10, "test").to_json()
    with pytest.raises(ReferenceError, match="format_version 2 is not supported"):
        parse({**good, "format_version": 2})
    with pytest.raises(ReferenceError, match="not an inferd reference"):
        parse({"tensors": []})
    broken = json.loads(json.dumps(good))
    broken["tensors"][0]["shares"] = [[0.5, 0.5]]
    with pytest.raises(ReferenceError, match="'shares' has shape"):
        parse(broken)


def test_reader_takes_npy_npz_and_parquet_and_names_what_is_wrong(tmp_path: Path) -> None:
    a, b = np.ones((4, 3), np.float32), np.zeros((4, 1), np.int64)
    np.save(tmp_path / "a.npy", a)
    np.savez(tmp_path / "ab.npz", a=a, b=b)
    assert read_inputs([tmp_path / "a.npy"], ["a"])["a"].shape == (4, 3)
    both = read_inputs([tmp_path / "ab.npz", tmp_path / "ab.npz"], ["a", "b"])
    assert both["a"].shape == (8, 3) and both["b"].shape == (8, 1)
    with pytest.raises(InputFileError, match="one array per input"):
        read_inputs([tmp_path / "a.npy"], ["a", "b"])
    with pytest.raises(InputFileError, match="no data for input"):
        read_inputs([tmp_path / "ab.npz"], ["a", "c"])
    (tmp_path / "a.csv").write_text("1,2\n")
    with pytest.raises(InputFileError, match="unknown file type"):
        read_inputs([tmp_path / "a.csv"], ["a"])
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    pq.write_table(pa.table({"a": a.tolist(), "b": b[:, 0]}), tmp_path / "ab.parquet")
    table = read_inputs([tmp_path / "ab.parquet"], ["a", "b"])
    assert table["a"].shape == (4, 3) and np.array_equal(table["b"], b[:, 0])


def test_monitor_reference_fails_in_one_line_without_a_traceback(
    demo_repository: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    np.save(tmp_path / "wrong.npy", np.ones((4, 3), np.float32))  # digits wants 64 pixels
    argv = ["reference", MODEL, "--input", str(tmp_path / "wrong.npy")]
    assert monitor_main([*argv, "--model-repository", str(demo_repository)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert not (demo_repository / MODEL / REFERENCE_PATH).exists()


def test_an_unreadable_reference_file_falls_back_to_capturing(
    demo_repository: Path, make_server: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    repository = digits_repository(demo_repository, tmp_path / "models")
    (repository / MODEL / REFERENCE_PATH).parent.mkdir()
    (repository / MODEL / REFERENCE_PATH).write_text('{"format": "something else"}')
    server = make_server(
        repository,
        metrics_port=0,
        monitor_sample_rate=1.0,
        monitor_reference_rows=30,
        monitor_interval_s=0.05,
    )
    port = server.server.metrics_port
    rows = lambda: metric(port, "inferd_drift_reference_rows", model=MODEL)  # noqa: E731
    with InferenceClient(server.address) as client:
        for _ in range(3):
            client.infer(MODEL, {"pixels": np.full((10, 64), 3.0, np.float32)})
    wait_until(lambda: rows() == 30, what="a captured reference")
    assert "not an inferd reference" in caplog.text
