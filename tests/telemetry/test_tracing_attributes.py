"""Server spans carry server.* and network.peer.* per OpenTelemetry's RPC
conventions."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from telemetry_helpers import MakeTracing

from inferd.clients import AsyncInferenceClient
from inferd.server.telemetry.net_attributes import peer_attributes, server_attributes

MakeServer = Callable[..., Any]


@pytest.mark.parametrize(
    ("peer", "attributes"),
    [
        (
            "ipv4:10.0.0.7:5123",
            {
                "network.peer.address": "10.0.0.7",
                "network.peer.port": 5123,
                "network.transport": "tcp",
                "network.type": "ipv4",
            },
        ),
        (
            "ipv6:%5B::1%5D:34506",  # how grpc writes an IPv6 peer
            {
                "network.peer.address": "::1",
                "network.peer.port": 34506,
                "network.transport": "tcp",
                "network.type": "ipv6",
            },
        ),
        (
            "unix:/run/inferd.sock",
            {"network.transport": "unix", "network.peer.address": "/run/inferd.sock"},
        ),
        ("unix:", {"network.transport": "unix"}),  # a client's end of a socket has no name
        ("ipv4:10.0.0.7", {}),  # no port
        ("ipv4:10.0.0.7:http", {}),
        ("vsock:3:1024", {}),
        ("", {}),
    ],
)
def test_peer_attributes(peer: str, attributes: dict[str, object]) -> None:
    assert peer_attributes(peer) == attributes


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("[::1]", "::1"),
        ("inferd.internal", "inferd.internal"),
        ("0.0.0.0", socket.gethostname()),  # binds everything: name this machine
        ("[::]", socket.gethostname()),
    ],
)
def test_server_attributes(host: str, address: str) -> None:
    assert server_attributes(host, 8001) == {"server.address": address, "server.port": 8001}


def test_every_server_span_has_server_and_peer_attributes(
    demo_repository: Path, make_server: MakeServer, make_tracing: MakeTracing
) -> None:
    """Unary and streaming RPCs, from several connections: each span names the
    server's bound address and its own caller's port."""
    tracing, exporter = make_tracing()
    server = make_server(demo_repository, tracing=tracing)
    x = {"pixels": np.ones((1, 64), np.float32)}

    async def calls() -> None:
        own_connection = [("grpc.use_local_subchannel_pool", 1)]
        for _ in range(2):  # two connections: two client ports
            async with AsyncInferenceClient(
                server.address, channel_options=own_connection
            ) as client:
                await client.infer("digits_mlp", x)
                assert await client.is_server_live()
                [_ async for _ in client.stream_infer("digits_mlp", [("a", x)])]

    asyncio.run(calls())
    server_spans = [s for s in exporter.get_finished_spans() if s.name.startswith("inference.")]
    assert len(server_spans) == 6
    ports = set()
    for span in server_spans:
        attributes = dict(span.attributes or {})
        assert attributes["server.address"] == "127.0.0.1"
        assert attributes["server.port"] == server.port
        assert attributes["network.peer.address"] == "127.0.0.1"
        assert attributes["network.transport"] == "tcp"
        ports.add(attributes["network.peer.port"])
    assert len(ports) == 2
    assert server.port not in ports
    # Spans inside the RPC are not server spans: they repeat none of it.
    inner = [s for s in exporter.get_finished_spans() if not s.name.startswith("inference.")]
    assert inner and not any("server.port" in (s.attributes or {}) for s in inner)
