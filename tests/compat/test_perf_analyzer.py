"""Triton's ``perf_analyzer`` against inferd's gRPC endpoint, unchanged.

The binary ships in the tritonclient wheel (the PyPI ``perf-analyzer`` 0.1.0
is an empty placeholder). It links ``libb64.so.0d`` (Debian ``libb64-0d``)
and ``libcudart.so.12`` (PyPI ``nvidia-cuda-runtime-cu12``; it needs no GPU
unless CUDA shared memory is asked for). Where those are missing the tests
skip with the loader's own message; ``INFERD_REQUIRE_PERF_ANALYZER=1`` turns
that skip into a failure for CI that installs them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import grpc
import pytest

from inferd.protos import grpc_service_pb2 as pb
from inferd.protos import grpc_service_pb2_grpc as pb_grpc

#: Loader failures that mean "cannot run on this machine", not "broken".
_LOADER_ERROR = re.compile(
    r"error while loading shared libraries: .*|version `[^']+' not found.*|"
    r"cannot execute binary file.*|Exec format error.*"
)
RUN_TIMEOUT_S = 100


@dataclass(frozen=True)
class PerfAnalyzer:
    path: str
    env: dict[str, str]


def _find_binary() -> str | None:
    beside_python = Path(sys.executable).parent / "perf_analyzer"
    if beside_python.is_file():
        return str(beside_python)
    return shutil.which("perf_analyzer")


def _library_path() -> str:
    """LD_LIBRARY_PATH plus pip's CUDA runtime directory, if installed: the
    binary links libcudart.so.12 and nothing else puts it on the loader path."""
    dirs = [
        str(Path(entry) / "nvidia" / "cuda_runtime" / "lib")
        for entry in sys.path
        if entry and (Path(entry) / "nvidia" / "cuda_runtime" / "lib").is_dir()
    ]
    existing = os.environ.get("LD_LIBRARY_PATH")
    return os.pathsep.join([*dirs, *([existing] if existing else [])])


def _skip(reason: str) -> NoReturn:
    if os.environ.get("INFERD_REQUIRE_PERF_ANALYZER") == "1":
        pytest.fail(f"INFERD_REQUIRE_PERF_ANALYZER=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def perf_analyzer() -> PerfAnalyzer:
    path = _find_binary()
    if path is None:
        _skip("perf_analyzer is not installed (it comes with the tritonclient wheel)")
    env = dict(os.environ, LD_LIBRARY_PATH=_library_path())
    proc = subprocess.run(
        [path, "--version"], capture_output=True, text=True, timeout=30, check=False, env=env
    )
    output = proc.stdout + proc.stderr
    if proc.returncode != 0 or "Perf Analyzer Version" not in output:
        loader = _LOADER_ERROR.search(output)
        if loader is not None:
            _skip(f"perf_analyzer cannot run here: {loader.group(0).strip()}")
        pytest.fail(f"perf_analyzer --version failed (rc {proc.returncode}):\n{output[-3000:]}")
    return PerfAnalyzer(path, env)


@dataclass(frozen=True)
class Level:
    concurrency: int
    throughput: float
    client_requests: int
    server_requests: int


def parse_levels(output: str) -> list[Level]:
    """One entry per "Request concurrency: N" block of perf_analyzer's report."""
    levels = []
    for block in re.split(r"^Request concurrency: ", output, flags=re.M)[1:]:
        concurrency = int(block.split("\n", 1)[0])
        throughput = re.search(r"Throughput: ([\d.]+) infer/sec", block)
        client = re.search(r"Client:\s+Request count: (\d+)", block)
        server = re.search(r"Successful request count: (\d+)", block)
        assert throughput and client and server, f"unparsed block:\n{block}"
        levels.append(
            Level(
                concurrency,
                float(throughput.group(1)),
                int(client.group(1)),
                int(server.group(1)),
            )
        )
    return levels


def run_perf_analyzer(
    perf_analyzer: PerfAnalyzer,
    protocol: str,
    url: str,
    model: str,
    batch: int,
    concurrency: str,
    extra: list[str],
) -> subprocess.CompletedProcess[str]:
    """One perf_analyzer run that must succeed without an error in its output."""
    command = [
        perf_analyzer.path,
        *("-i", protocol, "-u", url, "-m", model, "-b", str(batch)),
        *("--concurrency-range", concurrency, "--measurement-interval", "1000"),
        # This checks compatibility, not speed: a 2x wobble on a busy CI
        # machine must not fail the run ("Failed to obtain stable measurement").
        *("--stability-percentage", "100", "--max-trials", "10"),
        *extra,
    ]
    proc = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
        env=perf_analyzer.env,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    assert not re.search(r"error|failed", output, flags=re.I), output[-4000:]
    return proc


def _server_stats(address: str, model: str) -> pb.ModelStatistics:
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        response = stub.ModelStatistics(pb.ModelStatisticsRequest(name=model), timeout=30)
    (stats,) = response.model_stats
    return stats


@pytest.mark.slow
@pytest.mark.parametrize(
    ("model", "batch", "concurrency", "levels", "extra"),
    [
        pytest.param("digits_mlp", 1, "1:4:2", [1, 3], [], id="digits-sync"),
        pytest.param("digits_mlp", 1, "1:4:2", [1, 3], ["--streaming"], id="digits-streaming"),
        # INT64, FP16 and BYTES inputs with perf_analyzer's random data, batched.
        pytest.param("text_stats", 4, "2", [2], ["--async"], id="text_stats-async-batch4"),
    ],
)
def test_perf_analyzer_sweep(
    perf_analyzer: PerfAnalyzer,
    server_address: str,
    model: str,
    batch: int,
    concurrency: str,
    levels: list[int],
    extra: list[str],
) -> None:
    before = _server_stats(server_address, model)
    proc = run_perf_analyzer(
        perf_analyzer, "grpc", server_address, model, batch, concurrency, extra
    )
    output = proc.stdout + proc.stderr

    parsed = parse_levels(proc.stdout)
    assert [level.concurrency for level in parsed] == levels, output
    for level in parsed:
        assert level.throughput > 0
        assert level.client_requests > 0
        # perf_analyzer reads the server's side from ModelStatistics deltas.
        assert level.server_requests > 0
    summary = re.findall(r"^Concurrency: (\d+), throughput: ([\d.]+) infer/sec", output, re.M)
    assert [int(c) for c, _ in summary] == levels

    after = _server_stats(server_address, model)
    succeeded = after.inference_stats.success.count - before.inference_stats.success.count
    # Warm-up requests are not in perf_analyzer's counts, so the server saw at least these.
    assert succeeded >= sum(level.client_requests for level in parsed)
    assert after.inference_stats.fail.count == before.inference_stats.fail.count
    assert after.inference_count - before.inference_count == succeeded * batch


def test_parse_levels_reads_perf_analyzer_report() -> None:
    # Runs everywhere, so the parser stays right where the binary cannot run.
    report = (
        "Request concurrency: 1\n  Client: \n    Request count: 9652\n"
        "    Throughput: 2678.8 infer/sec\n  Server: \n    Inference count: 9653\n"
        "    Successful request count: 9653\n\n"
        "Request concurrency: 3\n  Client: \n    Request count: 12442\n"
        "    Throughput: 3451.49 infer/sec\n  Server: \n    Successful request count: 12444\n"
    )
    assert parse_levels(report) == [
        Level(1, 2678.8, 9652, 9653),
        Level(3, 3451.49, 12442, 12444),
    ]


@pytest.mark.parametrize(
    "stderr",
    [
        "/x/perf_analyzer: error while loading shared libraries: libb64.so.0d: cannot open "
        "shared object file: No such file or directory",
        "/x/perf_analyzer: /lib/x86_64-linux-gnu/libc.so.6: version `GLIBC_2.38' not found "
        "(required by /x/perf_analyzer)",
    ],
)
def test_loader_errors_mean_skip(stderr: str) -> None:
    # The skip reason quotes the loader; a real failure (no match) fails instead.
    match = _LOADER_ERROR.search(stderr)
    assert match is not None
    assert match.group(0).startswith(("error while loading", "version `GLIBC_2.38'"))
    assert _LOADER_ERROR.search("perf_analyzer: unrecognized option '--bogus'") is None
