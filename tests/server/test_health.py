"""grpc.health.v1 (overall and per model, SERVING only after warmup,
NOT_SERVING while draining) and server reflection behind its flag."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from conftest import ServerThread
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from inferd.server.app import ServerConfig

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
MODELS = ("digits_mlp", "text_stats", "dense_reference")


def check(address: str, service: str) -> int:
    with grpc.insecure_channel(address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=10
        )
        return int(reply.status)


def test_every_model_and_the_server_report_serving(server_address: str) -> None:
    for service in ("", "inference.GRPCInferenceService", *MODELS):
        assert check(server_address, service) == SERVING, service


def test_unknown_service_is_not_found(server_address: str) -> None:
    with pytest.raises(grpc.RpcError) as info:
        check(server_address, "no_such_model")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_not_serving_until_warmup_is_done(
    demo_repository: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the models warm up (held here), every service is NOT_SERVING;
    once the load is done, SERVING."""
    import inferd.server.version_loader as version_loader

    gate = threading.Event()
    warming = threading.Event()
    real = version_loader.warm_up

    def held(*args: object, **kwargs: object) -> tuple[int, ...]:
        warming.set()
        gate.wait(30)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(version_loader, "warm_up", held)
    thread = ServerThread(ServerConfig(model_repository=demo_repository, grpc_port=0))
    starting = threading.Thread(target=thread.start)
    starting.start()
    try:
        assert warming.wait(30)
        deadline = time.monotonic() + 30
        while thread.server is None or not thread.server.port:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        address = f"127.0.0.1:{thread.server.port}"
        during = {s: check(address, s) for s in ("", *MODELS)}
    finally:
        gate.set()
        starting.join(60)
    try:
        after = {s: check(thread.address, s) for s in ("", *MODELS)}
    finally:
        thread.stop()
    assert set(during.values()) == {NOT_SERVING}
    assert after == {s: SERVING for s in ("", *MODELS)}


def test_a_model_that_fails_to_load_is_not_serving_and_the_others_are(
    demo_repository: Path, tmp_path: Path, make_server: Callable[..., ServerThread]
) -> None:
    repo = tmp_path / "models"
    shutil.copytree(demo_repository, repo)
    (repo / "text_stats" / "1" / "model.onnx").write_bytes(b"not an onnx model")
    server = make_server(repo)
    assert check(server.address, "text_stats") == NOT_SERVING
    assert check(server.address, "digits_mlp") == SERVING
    assert check(server.address, "") == SERVING  # the others keep the server in rotation


def test_draining_turns_everything_not_serving(
    demo_repository: Path, make_server: Callable[..., ServerThread]
) -> None:
    server = make_server(demo_repository)
    assert check(server.address, "") == SERVING
    with grpc.insecure_channel(server.address) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service="digits_mlp"), timeout=30
        )
        assert next(watch).status == SERVING
        assert server.server is not None
        stopping = threading.Thread(target=server.call, args=(server.server.stop(grace=5),))
        stopping.start()
        # Watchers hear NOT_SERVING before the transport goes away.
        assert next(watch).status == NOT_SERVING
        stopping.join(30)


def test_unloading_a_model_turns_it_not_serving(
    demo_repository: Path, make_server: Callable[..., ServerThread]
) -> None:
    server = make_server(demo_repository)
    assert server.server is not None
    server.call(server.server.models.unload("dense_reference"))
    deadline = time.monotonic() + 5
    while check(server.address, "dense_reference") != NOT_SERVING:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert check(server.address, "digits_mlp") == SERVING
    server.call(server.server.models.load("dense_reference"))
    deadline = time.monotonic() + 5
    while check(server.address, "dense_reference") != SERVING:
        assert time.monotonic() < deadline
        time.sleep(0.02)


def services(address: str) -> set[str]:
    with grpc.insecure_channel(address) as channel:
        return set(ProtoReflectionDescriptorDatabase(channel).get_services())


def test_reflection_is_off_by_default(server_address: str) -> None:
    with pytest.raises(grpc.RpcError) as info:
        services(server_address)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_reflection_lists_the_services_when_enabled(
    demo_repository: Path, make_server: Callable[..., ServerThread]
) -> None:
    server = make_server(demo_repository, reflection=True)
    assert {
        "inference.GRPCInferenceService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= services(server.address)
