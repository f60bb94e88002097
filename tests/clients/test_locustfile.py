"""The locustfile drives a real server headless and enforces its thresholds.

Locust runs in a child process: it monkey-patches the process for gevent."""

from __future__ import annotations

import csv
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _locust(
    address: str, out: Path, *extra: str, seconds: int = 3
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "locust",
            "-f",
            str(ROOT / "clients" / "locustfile.py"),
            "--headless",
            "-u",
            "4",
            "-r",
            "4",
            "-t",
            f"{seconds}s",
            "--host",
            address,
            "--csv",
            str(out),
            "--only-summary",
            *extra,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90 + seconds,
    )


def _total_row(prefix: Path) -> dict[str, str]:
    with open(f"{prefix}_stats.csv", newline="") as f:
        return next(r for r in csv.DictReader(f) if r["Name"] == "Aggregated")


@pytest.mark.slow
def test_headless_run_writes_csv_and_passes_loose_thresholds(
    server_address: str, tmp_path: Path
) -> None:
    result = _locust(
        server_address, tmp_path / "ok", "--max-p99-ms", "5000", "--max-failure-ratio", "0.0"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    row = _total_row(tmp_path / "ok")
    assert int(row["Request Count"]) > 50
    assert int(row["Failure Count"]) == 0


@pytest.mark.slow
def test_a_missed_p99_threshold_fails_the_run(server_address: str, tmp_path: Path) -> None:
    result = _locust(server_address, tmp_path / "tight", "--max-p99-ms", "0.001")
    assert result.returncode == 1
    assert "p99" in result.stdout + result.stderr


@pytest.mark.slow
def test_failures_count_against_the_failure_ratio(server_address: str, tmp_path: Path) -> None:
    result = _locust(
        server_address,
        tmp_path / "bad",
        "--model",
        "dense_reference",
        "--rows",
        "32",
        "--timeout-ms",
        "0.001",
        "--max-failure-ratio",
        "0.5",
    )
    assert result.returncode == 1
    assert int(_total_row(tmp_path / "bad")["Failure Count"]) > 0


def _own_model(repository: Path) -> Path:
    """A model that is not a demo: FP16, INT32, BYTES and a variable inner dim."""
    from onnx import TensorProto, helper, save

    io = [
        ("half", TensorProto.FLOAT16, ["N", 3]),
        ("ids", TensorProto.INT32, ["N", "T"]),
        ("tag", TensorProto.STRING, ["N", 1]),
    ]
    graph = helper.make_graph(
        [helper.make_node("Identity", [name], [f"{name}_out"]) for name, _, _ in io],
        "own",
        [helper.make_tensor_value_info(name, kind, shape) for name, kind, shape in io],
        [helper.make_tensor_value_info(f"{name}_out", kind, shape) for name, kind, shape in io],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    (repository / "own" / "1").mkdir(parents=True)
    save(model, str(repository / "own" / "1" / "model.onnx"))
    return repository


@pytest.fixture(scope="module")
def own_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from conftest import ServerThread

    from inferd.server.app import ServerConfig

    repository = _own_model(tmp_path_factory.mktemp("own"))
    thread = ServerThread(ServerConfig(model_repository=repository, grpc_port=0)).start()
    try:
        yield thread.address
    finally:
        thread.stop()


@pytest.mark.slow
def test_any_model_for_ten_seconds_with_no_failure(own_address: str, tmp_path: Path) -> None:
    """Inputs come from the model's metadata: every datatype, rows, --shape."""
    result = _locust(
        own_address, tmp_path / "own", "--model", "own", "--rows", "3", "--shape", "ids=5",
        "--max-p95-ms", "5000", "--max-p99-ms", "5000", "--max-failure-ratio", "0",
        seconds=10,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    row = _total_row(tmp_path / "own")
    assert int(row["Request Count"]) > 50
    assert int(row["Failure Count"]) == 0
    # 3 rows x (3 x FP16 + 5 x INT32 + one BYTES element of 8-10 bytes) per answer.
    assert 3 * (3 * 2 + 5 * 4 + 8) <= float(row["Average Content Size"]) <= 3 * (6 + 20 + 10)


@pytest.mark.slow
def test_streaming_users_each_keep_one_stream(own_address: str, tmp_path: Path) -> None:
    result = _locust(
        own_address, tmp_path / "stream", "--model", "own", "--stream", "--max-failure-ratio", "0"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    with open(tmp_path / "stream_stats.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["Name"] == "own"]
    assert [r["Type"] for r in rows] == ["grpc-stream"]
    assert int(rows[0]["Request Count"]) > 50 and int(rows[0]["Failure Count"]) == 0


@pytest.mark.slow
def test_a_demo_model_with_bytes_and_fp16_inputs(server_address: str, tmp_path: Path) -> None:
    """text_stats (INT64 [-1, 8], FP16, BYTES) raised KeyError before inputs came from metadata."""
    result = _locust(server_address, tmp_path / "ts", "--model", "text_stats",
                     "--max-failure-ratio", "0")  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert int(_total_row(tmp_path / "ts")["Failure Count"]) == 0


@pytest.mark.slow
def test_inputs_from_a_data_file(own_address: str, tmp_path: Path) -> None:
    data = tmp_path / "inputs.json"
    data.write_text('{"half": [[1, 2, 3]], "ids": [[7, 8]], "tag": [["a"]]}')
    result = _locust(own_address, tmp_path / "file", "--model", "own", "--data", str(data),
                     "--max-failure-ratio", "0")  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    size = float(_total_row(tmp_path / "file")["Average Content Size"])
    assert size == 3 * 2 + 2 * 4 + 1  # FP16, INT32, BYTES


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--shape", "nope=3"], "--shape names ['nope']"),
        (["--rows", "0"], "rows 0 is outside 1..64"),
        (["--model", "missing"], "NOT_FOUND"),
    ],
)
def test_inputs_that_cannot_be_built_end_the_run_with_2(
    own_address: str, tmp_path: Path, extra: list[str], message: str
) -> None:
    result = _locust(own_address, tmp_path / "bad", "--model", "own", *extra)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "error: cannot build inputs" in result.stdout
    assert message in result.stdout
