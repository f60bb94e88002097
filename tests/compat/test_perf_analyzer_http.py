"""Triton's ``perf_analyzer -i http`` against inferd's HTTP/REST endpoint,
unchanged: it reads the model's metadata and configuration as JSON, sends
binary tensors and reads the server's statistics over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ServerThread
from test_perf_analyzer import PerfAnalyzer, parse_levels, perf_analyzer, run_perf_analyzer

from inferd.server.app import ServerConfig

__all__ = ["perf_analyzer"]  # the fixture, shared with the gRPC tests


@pytest.fixture(scope="module")
def http_address(demo_repository: Path) -> Iterator[str]:
    config = ServerConfig(
        model_repository=demo_repository, grpc_port=0, allow_http=True, http_port=0
    )
    thread = ServerThread(config).start()
    assert thread.server is not None
    yield f"127.0.0.1:{thread.server.http_port}"
    thread.stop()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("model", "batch", "extra"),
    [
        pytest.param("digits_mlp", 1, [], id="digits-sync"),
        # INT64, FP16 and BYTES inputs with perf_analyzer's random data, batched.
        pytest.param("text_stats", 4, ["--async"], id="text_stats-async-batch4"),
    ],
)
def test_perf_analyzer_over_http(
    perf_analyzer: PerfAnalyzer, http_address: str, model: str, batch: int, extra: list[str]
) -> None:
    proc = run_perf_analyzer(perf_analyzer, "http", http_address, model, batch, "2", extra)
    (level,) = parse_levels(proc.stdout)
    assert level.concurrency == 2 and level.throughput > 0
    # perf_analyzer reads the server's side from the statistics endpoint.
    assert level.client_requests > 0 and level.server_requests > 0
