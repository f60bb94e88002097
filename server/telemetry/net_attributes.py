"""Network attributes of RPC server spans, per OpenTelemetry's RPC conventions:
``server.address``/``server.port`` (where the server listens) and
``network.peer.address``/``network.peer.port``/``network.transport`` (the
connection's other end, from gRPC's peer string)."""

from __future__ import annotations

import functools
import socket
from urllib.parse import unquote

#: Hosts that bind every interface: they name no address a caller dialled.
_WILDCARDS = frozenset({"", "0.0.0.0", "::", "[::]", "*"})


def server_attributes(host: str, port: int) -> dict[str, str | int]:
    """``server.address``/``server.port`` of a server bound to ``host:port``;
    a wildcard host gives this machine's name (a pod's name in Kubernetes),
    since gRPC does not tell a handler which address the caller dialled."""
    address = socket.gethostname() if host in _WILDCARDS else host.strip("[]")
    return {"server.address": address, "server.port": port}


@functools.lru_cache(maxsize=1024)
def peer_attributes(peer: str) -> dict[str, str | int]:
    """The ``network.*`` attributes of gRPC's peer string (``ipv4:10.0.0.7:5123``,
    ``ipv6:%5B::1%5D:5123``, ``unix:/run/x.sock``); {} for a form it does not
    know. Cached: a connection's calls share one peer. Callers must not
    mutate the dict."""
    scheme, _, rest = peer.partition(":")
    if scheme in ("ipv4", "ipv6"):
        host, _, port = unquote(rest).rpartition(":")
        if not host or not port.isdigit():
            return {}
        return {
            "network.peer.address": host.strip("[]"),
            "network.peer.port": int(port),
            "network.transport": "tcp",
            "network.type": scheme,
        }
    if scheme in ("unix", "unix-abstract"):
        path = unquote(rest)
        attributes: dict[str, str | int] = {"network.transport": "unix"}
        if path:
            attributes["network.peer.address"] = path
        return attributes
    return {}
