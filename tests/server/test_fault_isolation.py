"""Fault isolation over gRPC: an engine that raises, hangs or runs out of
memory fails only its own model's requests and is marked unhealthy (model not
ready, health NOT_SERVING) until a probe passes; a model that fails to load
leaves the others serving; a hung engine thread does not keep the process
from exiting. The engines are the real onnxruntime ones of a running server,
patched to misbehave on cue. Scheduler-level cases: test_batcher_faults.py.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from conftest import ServerThread
from grpc_health.v1 import health_pb2, health_pb2_grpc

import inferd.server.version_loader as version_loader
from benchmarks.server_process import ROOT
from inferd.clients import InferenceClient, InferenceServerError
from inferd.engines import EngineError

NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVING = health_pb2.HealthCheckResponse.SERVING


def health(address: str, service: str) -> int:
    with grpc.insecure_channel(address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=10
        )
        return int(reply.status)


TEXT = {
    "token_ids": np.arange(8, dtype=np.int64).reshape(1, 8),
    "weights": np.ones((1, 8), np.float16),
    "tag": np.array([[b"t"]], dtype=object),
}
PIXELS = {"pixels": np.zeros((1, 64), np.float32)}


@pytest.fixture
def faulty(
    demo_repository: Path, make_server: Callable[..., ServerThread]
) -> Iterator[tuple[ServerThread, Any, threading.Event]]:
    """A server whose digits_mlp engine misbehaves on cue: set
    ``engine.fault`` to "hang", "raise" or "oom"."""
    server = make_server(demo_repository, engine_timeout_s=0.3, health_probe_interval_s=0.1)
    assert server.server is not None
    engine = server.server.models.resolve("digits_mlp").engine
    release = threading.Event()
    real = engine.infer
    engine.fault = ""

    def infer(inputs: Any, outputs: Any = None) -> Any:
        if engine.fault == "hang":
            release.wait(30)
        elif engine.fault == "raise":
            raise EngineError("kernel failed")
        elif engine.fault == "oom":
            raise MemoryError
        return real(inputs, outputs)

    engine.infer = infer
    yield server, engine, release
    release.set()


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def test_hung_model_fails_only_its_own_requests(
    faulty: tuple[ServerThread, Any, threading.Event],
) -> None:
    server, engine, release = faulty
    with InferenceClient(server.address) as client:
        engine.fault = "hang"
        start = time.monotonic()
        with pytest.raises(InferenceServerError) as info:
            client.infer("digits_mlp", PIXELS, timeout=10)
        assert info.value.code == grpc.StatusCode.UNAVAILABLE
        assert "engine timeout of 300 ms" in info.value.details
        assert time.monotonic() - start < 3
        # Unhealthy: not ready, health NOT_SERVING, new requests refused at once.
        assert not client.is_model_ready("digits_mlp", timeout=10)
        wait_until(lambda: health(server.address, "digits_mlp") == NOT_SERVING)
        with pytest.raises(InferenceServerError, match="unhealthy"):
            client.infer("digits_mlp", PIXELS, timeout=10)
        index = {r["name"]: r for r in client.repository_index(timeout=10)}
        assert "unhealthy" in index["digits_mlp"]["reason"]
        # The others are untouched.
        assert int(client.infer("text_stats", TEXT, timeout=10)["id_sum"][0, 0]) == 28
        assert health(server.address, "text_stats") == SERVING
        assert health(server.address, "") == SERVING
        # The engine comes back: the probe notices, the model serves again.
        engine.fault = ""
        release.set()
        wait_until(lambda: client.is_model_ready("digits_mlp", timeout=10))
        assert health(server.address, "digits_mlp") == SERVING
        assert client.infer("digits_mlp", PIXELS, timeout=10)["label"].shape == (1, 1)


def test_failing_model_is_marked_unhealthy_and_recovers(
    faulty: tuple[ServerThread, Any, threading.Event],
) -> None:
    server, engine, _ = faulty
    with InferenceClient(server.address) as client:
        engine.fault = "raise"
        for _ in range(3):
            with pytest.raises(InferenceServerError) as info:
                client.infer("digits_mlp", PIXELS, timeout=10)
            assert info.value.code == grpc.StatusCode.INTERNAL
            assert "kernel failed" in info.value.details
        wait_until(lambda: not client.is_model_ready("digits_mlp", timeout=10))
        assert int(client.infer("text_stats", TEXT, timeout=10)["id_sum"][0, 0]) == 28
        engine.fault = ""
        wait_until(lambda: client.is_model_ready("digits_mlp", timeout=10))


def test_memory_error_is_reported_for_its_model_only(
    faulty: tuple[ServerThread, Any, threading.Event],
) -> None:
    server, engine, _ = faulty
    with InferenceClient(server.address) as client:
        engine.fault = "oom"
        with pytest.raises(InferenceServerError) as info:
            client.infer("digits_mlp", PIXELS, timeout=10)
        assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "'digits_mlp' ran out of memory" in info.value.details
        assert int(client.infer("text_stats", TEXT, timeout=10)["id_sum"][0, 0]) == 28
        engine.fault = ""
        assert client.infer("digits_mlp", PIXELS, timeout=10)["label"].shape == (1, 1)


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        pytest.param(MemoryError(), "out of memory while loading", id="memory"),
        pytest.param(RuntimeError("/secret/path/model.onnx: boom"), "internal error", id="bug"),
    ],
)
def test_a_model_that_fails_to_load_leaves_the_others_serving(
    demo_repository: Path,
    make_server: Callable[..., ServerThread],
    monkeypatch: pytest.MonkeyPatch,
    error: BaseException,
    reason: str,
) -> None:
    real = version_loader.load_engine

    def load_engine(platform: str, path: Path, options: Any = None) -> Any:
        if "text_stats" in str(path):
            raise error
        return real(platform, path, options)

    monkeypatch.setattr(version_loader, "load_engine", load_engine)
    srv = make_server(demo_repository)
    with InferenceClient(srv.address) as client:
        index = {r["name"]: r for r in client.repository_index(timeout=10)}
        assert index["text_stats"]["state"] == "UNAVAILABLE"
        assert reason in index["text_stats"]["reason"]
        assert "/secret" not in index["text_stats"]["reason"]
        assert index["digits_mlp"]["state"] == "READY"
        assert client.infer("digits_mlp", PIXELS, timeout=10)["label"].shape == (1, 1)
        with pytest.raises(InferenceServerError) as info:
            client.infer("text_stats", TEXT, timeout=10)
        assert info.value.code == grpc.StatusCode.UNAVAILABLE
    assert health(srv.address, "text_stats") == NOT_SERVING
    assert health(srv.address, "digits_mlp") == SERVING


def test_a_hung_engine_does_not_keep_the_process_from_exiting(
    demo_repository: Path, tmp_path: Path
) -> None:
    """Python cannot kill the hung thread; it is a daemon, so the drained
    server still exits (status 0) instead of waiting for it forever."""
    script = textwrap.dedent(
        f"""
        import asyncio, threading
        import numpy as np
        from inferd.clients import AsyncInferenceClient, InferenceServerError
        from inferd.server.app import InferdServer, ServerConfig

        async def main():
            server = InferdServer(ServerConfig(
                model_repository={str(demo_repository)!r}, grpc_port=0, engine_timeout_s=0.2))
            port = await server.start()
            engine = server.models.resolve("digits_mlp").engine
            engine.infer = lambda *a, **k: threading.Event().wait()  # hangs for good
            async with AsyncInferenceClient(f"127.0.0.1:{{port}}") as client:
                try:
                    await client.infer("digits_mlp", {{"pixels": np.zeros((1, 64), np.float32)}})
                except InferenceServerError as exc:
                    print("answered", exc.code.name)
            await server.stop(grace=2)
            print("stopped")

        asyncio.run(main())
        """
    )
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "answered UNAVAILABLE" in done.stdout and "stopped" in done.stdout
    assert time.monotonic() - start < 30
