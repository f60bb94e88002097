"""benchmarks.cpu_per_request: server CPU per request, side by side with the bare handler."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from benchmarks import cpu_per_request
from benchmarks.server_cpu import Result, cpu_seconds, free_port, tree_cpu_seconds, wait_ready
from inferd.clients import InferenceClient


def test_old_revisions_run_as_server_cli(tmp_path: Path) -> None:
    """A checkout from before the `inferd` import root has no inferd/__main__.py."""
    assert cpu_per_request.inferd_command(tmp_path, tmp_path, 1)[1:3] == ["-m", "server.cli"]
    (tmp_path / "inferd").mkdir()
    (tmp_path / "inferd" / "__main__.py").write_text("")
    assert cpu_per_request.inferd_command(tmp_path, tmp_path, 1)[1:3] == ["-m", "inferd"]


def test_cpu_seconds_reads_this_process() -> None:
    before = cpu_seconds(os.getpid())
    sum(i * i for i in range(2_000_000))
    assert cpu_seconds(os.getpid()) > before
    assert cpu_seconds(2**22 + 12345) == 0.0  # no such process


def test_result_figures() -> None:
    result = Result(requests=4, seconds=2.0, latencies=[0.001, 0.002, 0.003, 0.004], cpu_s=0.002)
    assert result.rate == 2.0
    assert result.cpu_us_per_request == pytest.approx(500.0)
    assert result.percentile_ms(0.5) == pytest.approx(3.0)
    assert Result().cpu_us_per_request == 0.0


def test_a_short_run_measures_both_servers(
    demo_repository: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--seconds", "1", "--rounds", "1", "--concurrency", "2"]
    assert cpu_per_request.main([*args, "--repository", str(demo_repository)]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[-2:]}
    assert set(rows) == {"bare", "now"}
    assert float(rows["now"][1]) > 0 and float(rows["now"][3]) > 0  # CPU us/req, req/s
    # Rows per engine batch: from inferd's statistics; the bare handler keeps none.
    assert float(rows["now"][6]) >= 1.0
    assert rows["bare"][-1] == "-"


def test_batch_counts_needs_a_server_with_statistics() -> None:
    assert cpu_per_request.batch_counts("127.0.0.1:1", "digits_mlp") is None


def test_env_sets_a_variable_for_one_variant_only(tmp_path: Path) -> None:
    assert cpu_per_request.parse_env("b:INFERD_TRITON_METRICS=1") == (
        "b",
        "INFERD_TRITON_METRICS",
        "1",
    )
    assert cpu_per_request.parse_env("b:EMPTY=") == ("b", "EMPTY", "")
    for bad in ("INFERD_X=1", "b:=1", "b:INFERD_X", ":X=1"):
        with pytest.raises(argparse.ArgumentTypeError):
            cpu_per_request.parse_env(bad)
    variant = cpu_per_request.Variant("b", [], tmp_path, env={"INFERD_TRITON_METRICS": "1"})
    env = variant.server_env()
    assert env["INFERD_TRITON_METRICS"] == "1" and env["PATH"] == os.environ["PATH"]
    assert "INFERD_TRITON_METRICS" not in cpu_per_request.Variant("a", [], tmp_path).server_env()


def test_env_must_name_a_variant(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cpu_per_request.main(["--rev", "a=.", "--env", "b:INFERD_X=1"])
    assert exit_info.value.code == 2
    assert "--env/--repository-for name no --rev variant: b" in capsys.readouterr().err


def test_repository_for_names_a_variant_and_a_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cpu_per_request.parse_repository_for(f"b={tmp_path}") == ("b", tmp_path)
    for bad in ("b", "=x", "b="):
        with pytest.raises(argparse.ArgumentTypeError):
            cpu_per_request.parse_repository_for(bad)
    with pytest.raises(SystemExit) as exit_info:
        cpu_per_request.main(["--rev", "a=.", "--repository-for", f"b={tmp_path}"])
    assert exit_info.value.code == 2
    assert "name no --rev variant: b" in capsys.readouterr().err


def test_a_short_streaming_run_measures_both_servers_over_one_stream(
    demo_repository: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--seconds", "1", "--rounds", "1", "--concurrency", "2", "--stream"]
    assert cpu_per_request.main([*args, "--repository-for", f"now={demo_repository}"]) == 0
    out = capsys.readouterr().out
    assert "one stream, 2 in flight" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[-2:]}
    assert set(rows) == {"bare", "now"}
    for row in rows.values():
        assert float(row[-5]) > 0 and float(row[-3]) > 0  # CPU us/req, req/s (bare streams too)


def test_tree_cpu_counts_the_children_too() -> None:
    # PyTriton is a launcher, tritonserver and a stub: its CPU is the tree's.
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; t = time.process_time()\n"
         "while time.process_time() - t < 0.3: pass\ntime.sleep(30)"]
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while cpu_seconds(child.pid) < 0.25:
            assert time.monotonic() < deadline, "the child never burnt its CPU"
            time.sleep(0.05)
        mine = cpu_seconds(os.getpid())
        assert tree_cpu_seconds(os.getpid()) >= mine + 0.25
    finally:
        child.kill()
        child.wait()


def test_the_bare_server_runs_the_model_through_its_thread(demo_repository: Path) -> None:
    model = demo_repository / "digits_mlp" / "1" / "model.onnx"
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.bare_server", "--port", str(port),
         "--engine", "thread", "--model", str(model), "--generic"],
        cwd=Path(cpu_per_request.__file__).resolve().parent.parent,
    )  # fmt: skip
    try:
        wait_ready(proc, f"127.0.0.1:{port}")
        pixels = np.random.default_rng(0).random((1, 64), dtype=np.float32)
        with InferenceClient(f"127.0.0.1:{port}") as client:
            answer = client.infer("digits_mlp", {"pixels": pixels}, timeout=10)
            assert client.is_server_live(timeout=10)  # a method served generically
        expected = ort.InferenceSession(str(model)).run(["probabilities"], {"pixels": pixels})[0]
        np.testing.assert_allclose(answer["probabilities"], expected, rtol=1e-5)
    finally:
        proc.terminate()
        proc.wait(15)
