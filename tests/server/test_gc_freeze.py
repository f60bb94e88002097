"""The served process freezes its loaded objects out of the garbage collector.

A full collection of a loaded server scanned every object (ORT sessions,
protobuf descriptors, the model repository) and stalled the event loop and
the engine thread for 22-30 ms, making a batch's requests late."""

from __future__ import annotations

import gc
from pathlib import Path

from conftest import ServerThread

from inferd.server.app import ServerConfig
from inferd.server.settings import parse_serve_settings


def test_cli_freezes_by_default_and_can_be_told_not_to() -> None:
    assert parse_serve_settings([]).values["gc_freeze"] is True
    assert parse_serve_settings(["--no-gc-freeze"]).values["gc_freeze"] is False


def test_server_freezes_what_is_alive_once_models_are_loaded(demo_repository: Path) -> None:
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    server = ServerThread(
        ServerConfig(model_repository=demo_repository, grpc_port=0, gc_freeze=True)
    ).start()
    try:
        frozen = gc.get_freeze_count()
        assert server.server is not None and server.server.models.loaded()
        # Everything alive then, the loaded sessions' Python objects included.
        assert frozen > 10_000
    finally:
        server.stop()
        gc.unfreeze()  # the rest of the test session collects as usual


def test_embedded_server_leaves_the_collector_alone(demo_repository: Path) -> None:
    gc.unfreeze()
    server = ServerThread(ServerConfig(model_repository=demo_repository, grpc_port=0)).start()
    try:
        assert gc.get_freeze_count() == 0
    finally:
        server.stop()
