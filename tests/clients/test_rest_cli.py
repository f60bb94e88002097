"""``inferd infer --http``: the CLI over HTTP/REST (``clients.rest``) answers
what it answers over gRPC, BYTES and FP16 included, and reports errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import ServerThread

from inferd.clients import rest
from inferd.clients.cli import infer_main
from inferd.server.app import ServerConfig


@pytest.fixture(scope="module")
def server(demo_repository: Path) -> Iterator[ServerThread]:
    config = ServerConfig(
        model_repository=demo_repository, grpc_port=0, allow_http=True, http_port=0
    )
    thread = ServerThread(config).start()
    yield thread
    thread.stop()


def http_url(server: ServerThread) -> str:
    assert server.server is not None
    return f"127.0.0.1:{server.server.http_port}"


def run_json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict:
    assert infer_main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_http_answers_as_grpc(
    server: ServerThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(3)
    np.save(tmp_path / "ids.npy", rng.integers(0, 100, (2, 8), dtype=np.int64))
    np.save(tmp_path / "w.npy", rng.random((2, 8)).astype(np.float16))
    np.save(tmp_path / "tag.npy", np.array([["gr\u00fc\u00dfe"], ["x"]]))
    argv = [
        "text_stats",
        *("-i", f"token_ids={tmp_path / 'ids.npy'}"),
        *("-i", f"weights={tmp_path / 'w.npy'}"),
        *("-i", f"tag={tmp_path / 'tag.npy'}"),
    ]
    over_grpc = run_json([*argv, "--url", server.address], capsys)
    over_http = run_json([*argv, "--http", "--url", http_url(server)], capsys)
    assert over_http == over_grpc
    assert over_http["outputs"]["tag_echo"]["data"] == [["gr\u00fc\u00dfe"], ["x"]]
    only = run_json([*argv, "--http", "--url", http_url(server), "-o", "id_sum"], capsys)
    assert list(only["outputs"]) == ["id_sum"]


def test_http_errors_are_reported(
    server: ServerThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    np.save(tmp_path / "x.npy", np.zeros((1, 63), np.float32))
    spec = f"pixels={tmp_path / 'x.npy'}"
    assert infer_main(["digits_mlp", "-i", spec, "--http", "--url", http_url(server)]) == 1
    assert "HTTP 400" in capsys.readouterr().err
    assert infer_main(["nope", "-i", spec, "--http", "--url", http_url(server)]) == 1
    assert "HTTP 404: model 'nope'" in capsys.readouterr().err


def test_unreachable_server() -> None:
    with pytest.raises(rest.HttpInferenceError, match="cannot reach"):
        rest.infer("127.0.0.1:1", "m", {"x": np.zeros(1, np.float32)}, timeout=5)
