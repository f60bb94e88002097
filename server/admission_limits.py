"""The server's limits on work admitted at once, one object for both front ends.

``--max-concurrent-rpcs`` bounds the calls that do work on the server as a
whole: the gRPC interceptor (``grpc.call_limit``) and the HTTP middleware
(``http.server``) take their slots from the same ``AdmissionLimits``, which
the app builds once, so gRPC and HTTP calls together never exceed it. Both
front ends leave the same calls uncounted, by gRPC method (an HTTP route by
its gRPC twin): health, readiness and metadata, answered from memory (what
probes call), and the long-lived health and reflection streams, capped by
``grpc.watch_budget``. While the request-bytes budget (``request_bytes``) is
full, counted calls are refused too. A front end calls ``admit`` once per
call and ``release`` once when it ends: no task, no lock (one event loop).
"""

from __future__ import annotations

from inferd.server.request_bytes import RequestBytes

_V2 = "/inference.GRPCInferenceService/"

#: Not counted: answered from memory, or capped by ``grpc.watch_budget``.
UNCOUNTED = frozenset(
    {
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        _V2 + "ServerLive",
        _V2 + "ServerReady",
        _V2 + "ModelReady",
        _V2 + "ServerMetadata",
        _V2 + "ModelMetadata",
    }
)


class AdmissionLimits:
    """At most ``max_calls`` counted calls at once across both front ends
    (None: no limit), and none while ``request_bytes`` is full."""

    __slots__ = ("_message", "active", "max_calls", "request_bytes")

    def __init__(self, max_calls: int | None, request_bytes: RequestBytes) -> None:
        self.max_calls = max_calls
        self.request_bytes = request_bytes
        #: Counted calls admitted and not yet released, gRPC and HTTP together.
        self.active = 0
        self._message = f"Concurrent RPC limit of {max_calls} reached; retry later"

    def admit(self, *, streaming: bool = False) -> str | None:
        """Count a new call and return None, or return why it is refused
        (RESOURCE_EXHAUSTED: HTTP 429). A request stream has its own bytes bound
        (``grpc.stream_budget``), so a full budget does not refuse it."""
        if self.max_calls is not None and self.active >= self.max_calls:
            return self._message
        if not streaming and self.request_bytes.full:
            return self.request_bytes.reason
        self.active += 1
        return None

    def release(self, _task: object = None) -> None:
        """The end of a call ``admit`` counted (also a task's done callback)."""
        self.active -= 1
