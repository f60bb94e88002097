"""Assemble and run the server: gRPC on an asyncio loop, models behind it.

``InferdServer`` binds first (so a taken port fails at once), starts
answering health checks, then loads the repository; ServerReady turns true
when every model has a ready version. ``stop`` drains: readiness goes false,
new work is refused with UNAVAILABLE, admitted work finishes within the grace
period.

Telemetry (``server.telemetry``): metrics when ``metrics_port`` is set,
traces when the OTEL_* variables ask for them (or a ``Tracing`` is passed).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from protos import grpc_service_pb2_grpc as pb_grpc
from protos.inferd.admin.v1 import admin_pb2_grpc as admin_grpc
from server.admin import AdminServicer
from server.audit import AuditLog
from server.codec import DEFAULT_MAX_ELEMENTS
from server.lifecycle.controller import LifecycleController, ModelControlMode
from server.lifecycle.state import StateStore
from server.models import ModelManager
from server.repository import ModelRepository
from server.routing import Router
from server.servicer import SERVER_VERSION, InferenceServicer
from server.telemetry import Telemetry
from server.telemetry.metrics import GpuCollector, Metrics, MetricsServer, multiprocess_dir
from server.telemetry.tracing import Tracing, TracingConfigError, exporter_names

log = logging.getLogger("inferd.app")

MiB = 1 << 20


class _PeerGoneFilter(logging.Filter):
    """gRPC logs a full traceback (ERROR) each time a handler answers a call
    whose client already left (deadline passed, cancelled). Under overload
    that is thousands of tracebacks costing CPU when it is scarcest; the
    outcome is already counted as a late/cancelled request, so drop them."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "ExecuteBatchError" not in record.getMessage()


_PEER_GONE = _PeerGoneFilter()
logging.getLogger("grpc._cython.cygrpc").addFilter(_PEER_GONE)


class StartupError(Exception):
    """The server cannot start; the message is one line for the operator."""


@dataclass(frozen=True, slots=True)
class ServerConfig:
    model_repository: Path
    #: Address to bind. 127.0.0.1 by default so a developer's server is not
    #: exposed by accident; containers pass 0.0.0.0.
    host: str = "127.0.0.1"
    #: 8001 is Triton's gRPC port, so stock clients find us with their defaults.
    #: 0 picks a free port (tests).
    grpc_port: int = 8001
    #: Largest request/response message, bytes. 64 MiB fits a batch of 64
    #: 224x224x3 FP32 images with room to spare; raise it for bigger tensors.
    max_message_bytes: int = 64 * MiB
    #: Largest tensor accepted, in elements; checked before any allocation.
    max_elements: int = DEFAULT_MAX_ELEMENTS
    #: Seconds admitted requests get to finish on shutdown.
    grace_seconds: float = 30.0
    #: max_batch_size given to a model without config whose inputs all have a
    #: dynamic first dimension.
    default_max_batch_size: int = 64
    #: Let several processes share the port (SO_REUSEPORT). Off by default so
    #: a port already in use is an error instead of a silent second listener.
    reuse_port: bool = False
    #: Triton's model control mode: "none" (load everything at start, no
    #: load/unload requests), "explicit" (load ``load_models`` at start, then
    #: on request) or "poll" (load everything, follow repository changes).
    model_control_mode: str = "none"
    #: Models loaded at start in explicit mode; "*" loads all.
    load_models: tuple[str, ...] = ()
    #: Seconds between repository scans in poll mode.
    repository_poll_seconds: float = 15.0
    #: Where the shared route/stage state (routes.json) and the audit log
    #: (audit.sqlite) live; default ``<model_repository>/.inferd``.
    state_dir: Path | None = None
    #: Seconds between checks of the shared state file for other replicas' changes.
    state_poll_seconds: float = 1.0
    #: Where the audit log lives when not beside the state (default: state_dir).
    audit_dir: Path | None = None
    #: Prometheus ``/metrics`` on this port (same host as gRPC); None: no
    #: metrics at all. 0 picks a free port (tests).
    metrics_port: int | None = None
    #: Serve ``/metrics`` from this process. Workers of ``--workers N`` record
    #: (multiprocess mode) and leave serving to their supervisor.
    serve_metrics: bool = True
    #: One INFO log line per inference request (``--log-requests``).
    log_requests: bool = False


def _port_free(host: str, port: int) -> bool:
    if port == 0:
        return True
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


class InferdServer:
    """``tracing``: use this instead of what the OTEL_* variables configure
    (tests pass one with an in-memory exporter); the caller shuts it down."""

    def __init__(
        self,
        config: ServerConfig,
        *,
        interceptors: Sequence[grpc.aio.ServerInterceptor[Any, Any]] = (),
        tracing: Tracing | None = None,
    ) -> None:
        self.config = config
        try:
            repository = ModelRepository(config.model_repository)
        except Exception as exc:
            raise StartupError(str(exc)) from None
        try:
            mode = ModelControlMode(config.model_control_mode)
        except ValueError:
            choices = ", ".join(m.value for m in ModelControlMode)
            raise StartupError(
                f"model control mode '{config.model_control_mode}' is not one of {choices}"
            ) from None
        if config.repository_poll_seconds <= 0 or config.state_poll_seconds <= 0:
            raise StartupError("poll intervals must be positive numbers of seconds")
        state_dir = config.state_dir or repository.root / ".inferd"
        self._owns_tracing = tracing is None
        if tracing is None:
            try:
                tracing = Tracing.from_env(SERVER_VERSION)
            except TracingConfigError as exc:
                raise StartupError(str(exc)) from None
        self.tracing = tracing
        self.metrics: Metrics | None = None
        if config.metrics_port is not None:
            # Under a supervisor (multiprocess mode) it reports process and
            # GPU metrics for everyone; a lone server reports its own.
            alone = multiprocess_dir() is None
            self.metrics = Metrics(process=alone, gpu=GpuCollector() if alone else None)
        self.telemetry = Telemetry(self.metrics, tracing)
        self.models = ModelManager(
            repository,
            default_max_batch_size=config.default_max_batch_size,
            observer=self.telemetry,
        )
        self.router = Router(self.models)
        self.lifecycle = LifecycleController(
            self.models,
            self.router,
            StateStore(state_dir),
            AuditLog(config.audit_dir or state_dir),
            mode=mode,
            repository_poll_s=config.repository_poll_seconds,
            state_poll_s=config.state_poll_seconds,
        )
        self.servicer = InferenceServicer(
            self.models,
            router=self.router,
            lifecycle=self.lifecycle,
            max_elements=config.max_elements,
            tracing=tracing,
            log_requests=config.log_requests,
        )
        self.admin = AdminServicer(self.lifecycle)
        self._interceptors = tuple(interceptors)
        self._server: grpc.aio.Server | None = None
        self._metrics_server: MetricsServer | None = None
        self.port = 0
        #: The bound ``/metrics`` port (0: not serving).
        self.metrics_port = 0

    async def start(self, *, load: bool = True) -> int:
        """Bind, serve, load the models; returns the bound port."""
        options = [
            ("grpc.max_receive_message_length", self.config.max_message_bytes),
            ("grpc.max_send_message_length", self.config.max_message_bytes),
            ("grpc.so_reuseport", 1 if self.config.reuse_port else 0),
        ]
        server = grpc.aio.server(options=options, interceptors=self._interceptors or None)
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(self.servicer, server)
        admin_grpc.add_ModelAdminServicer_to_server(self.admin, server)
        address = f"{self.config.host}:{self.config.grpc_port}"
        if not self.config.reuse_port and not _port_free(self.config.host, self.config.grpc_port):
            # Checked ahead of gRPC so the operator gets one clear line, not a core log.
            raise StartupError(f"cannot listen on {address}: address already in use")
        self._start_metrics()
        try:
            port = server.add_insecure_port(address)
        except RuntimeError:
            port = 0
        if port == 0:
            self._stop_metrics()
            raise StartupError(f"cannot listen on {address}: address in use or not available")
        await server.start()
        self._server = server
        self.port = port
        log.info(
            "listening on %s:%d",
            self.config.host,
            port,
            extra={
                "event": "listening",
                "grpc_port": port,
                "metrics_port": self.metrics_port or None,
                "tracing": exporter_names() if self._owns_tracing else ["custom"],
            },
        )
        await self.lifecycle.start(load=load, load_models=self.config.load_models)
        return port

    def _start_metrics(self) -> None:
        if self.metrics is None or not self.config.serve_metrics:
            return
        assert self.config.metrics_port is not None
        try:
            self._metrics_server = MetricsServer(
                self.metrics.registry, self.config.host, self.config.metrics_port
            )
        except OSError as exc:
            raise StartupError(str(exc)) from None
        self.metrics_port = self._metrics_server.port

    def _stop_metrics(self) -> None:
        if self._metrics_server is not None:
            self._metrics_server.close()
            self._metrics_server = None

    async def stop(self, grace: float | None = None) -> None:
        """Drain and stop. Safe to call twice."""
        self.servicer.draining = True
        if self._server is not None:
            await self._server.stop(self.config.grace_seconds if grace is None else grace)
            self._server = None
        await self.servicer.close()
        await self.lifecycle.stop()
        await self.models.close()
        self._stop_metrics()
        if self._owns_tracing and self.tracing is not None:
            # Flush buffered spans (bounded by the exporter's own timeouts).
            await asyncio.to_thread(self.tracing.shutdown)
            self.tracing = None

    async def wait(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()


async def serve(config: ServerConfig) -> None:
    """Run until SIGTERM or SIGINT, then drain and return."""
    server = InferdServer(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await server.start()
    except StartupError:
        await server.stop(grace=0)  # flush and close what telemetry opened
        raise
    log.info(
        "serving %d model version(s) on %s:%d",
        len(server.models.loaded()),
        config.host,
        server.port,
        extra={"event": "startup", "versions_ready": len(server.models.loaded())},
    )
    await stop.wait()
    log.info(
        "shutting down: draining for up to %.0f s",
        config.grace_seconds,
        extra={"event": "shutdown"},
    )
    await server.stop()
