"""The HTTP/REST site starts and stops with the gRPC server: port 0 picks a
free port and is logged, a taken port stops start-up with one line, a
draining server refuses inference with 503 and reports not ready, and a
stopped server no longer accepts HTTP connections."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from pathlib import Path

import pytest
from http_helpers import http_port, request, start_http_server

from inferd.server.app import InferdServer, ServerConfig, StartupError

PIXELS = {"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1, 64], "data": [0] * 64}]}


def test_port_zero_is_logged(demo_repository: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="inferd.app"):
        server = start_http_server(demo_repository)
    try:
        port = http_port(server)
        assert port > 0
        listening = [r for r in caplog.records if getattr(r, "event", "") == "listening"]
        assert listening and getattr(listening[0], "http_port", None) == port
        assert f"HTTP/REST on port {port}" in listening[0].getMessage()
    finally:
        server.stop()


def test_draining_refuses_inference_then_stop_closes_the_port(demo_repository: Path) -> None:
    server = start_http_server(demo_repository)
    port = http_port(server)
    try:
        assert request(port, "POST", "/v2/models/digits_mlp/infer", PIXELS)[0] == 200
        assert server.server is not None
        server.server.dataplane.draining = True
        status, _, body = request(port, "POST", "/v2/models/digits_mlp/infer", PIXELS)
        assert status == 503 and b"shutting down" in body
        assert request(port, "GET", "/v2/health/ready")[0] == 503
        assert request(port, "GET", "/v2/health/live")[0] == 200
    finally:
        server.stop()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass


async def test_taken_http_port_stops_start_up(demo_repository: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = InferdServer(
            ServerConfig(
                model_repository=demo_repository, grpc_port=0, allow_http=True, http_port=port
            )
        )
        with pytest.raises(StartupError, match=r"\(HTTP\): address already in use"):
            await server.start()
        await server.stop(grace=0)
    await asyncio.sleep(0)


def test_no_http_unless_allowed(demo_repository: Path) -> None:
    server = InferdServer(ServerConfig(model_repository=demo_repository, grpc_port=0))
    assert server.http is None and server.http_port == 0


def test_concurrent_requests_over_the_limit_get_429(demo_repository: Path) -> None:
    server = start_http_server(demo_repository, max_concurrent_rpcs=1)
    port = http_port(server)
    try:
        # A request whose body never finishes stays in flight.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as held:
            held.sendall(
                b"POST /v2/models/digits_mlp/infer HTTP/1.1\r\nHost: x\r\n"
                b"Content-Length: 100\r\n\r\n{"
            )
            deadline = time.monotonic() + 10
            while server.server is not None:
                if server.server.admission.active or time.monotonic() > deadline:
                    break
                time.sleep(0.01)
            status, _, body = request(port, "POST", "/v2/models/digits_mlp/infer", PIXELS)
            assert status == 429 and b"Concurrent RPC limit of 1 reached" in body
            # Probes are not counted (as gRPC's Health/Check).
            assert request(port, "GET", "/v2/health/live")[0] == 200
        # The held request is gone: the next one is served.
        deadline = time.monotonic() + 10
        while request(port, "POST", "/v2/models/digits_mlp/infer", PIXELS)[0] != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        server.stop()
