"""Assemble and run the server: gRPC on an asyncio loop, models behind it.

``InferdServer`` binds first (so a taken port fails at once), starts
answering health checks, then loads the repository; ServerReady turns true
when every model has a ready version, grpc.health.v1 SERVING when the load
(with warmup) is done. ``stop`` drains: health goes NOT_SERVING, new work is
refused with UNAVAILABLE, admitted work finishes within the grace period.

Configuration: ``ServerConfig`` (server.settings), checked when the server
is built. Security (all off by default): TLS / mutual TLS (server.tls),
bearer tokens and JWTs with per-method roles (server.auth), files read by
server.credentials, one interceptor for all of it.

Telemetry (``server.telemetry``): metrics when ``metrics_port`` is set,
traces when the OTEL_* variables ask for them (or a ``Tracing`` is passed).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc
from grpc_reflection.v1alpha._async import ReflectionServicer

import inferd.server.grpc_log_filter  # noqa: F401  (quiets gRPC's tracebacks on import)
from inferd.protos import grpc_service_pb2 as pb
from inferd.protos import grpc_service_pb2_grpc as pb_grpc
from inferd.protos.inferd.admin.v1 import admin_pb2 as admin_pb
from inferd.protos.inferd.admin.v1 import admin_pb2_grpc as admin_grpc
from inferd.server.about import SERVER_VERSION
from inferd.server.admission_limits import AdmissionLimits
from inferd.server.audit import AuditLog
from inferd.server.auth import ROLE_ADMIN, AuthConfigError, MethodPolicy
from inferd.server.auth.gate import AuthGate
from inferd.server.credentials import (
    auth_interceptor,
    load_authenticator,
    load_certificate_roles,
    load_certificates,
    transport_name,
)
from inferd.server.dataplane import DataPlane
from inferd.server.grpc.admin import ADMIN_METHODS, AdminServicer
from inferd.server.grpc.call_gate import CallGate
from inferd.server.grpc.call_limit import CallLimit
from inferd.server.grpc.malformed import add_servicer
from inferd.server.grpc.servicer import InferenceServicer
from inferd.server.grpc.watch_budget import WatchBudget, add_budgeted
from inferd.server.health import HealthReporter
from inferd.server.http import HttpServer
from inferd.server.lifecycle.controller import LifecycleController, ModelControlMode
from inferd.server.lifecycle.state import StateStore
from inferd.server.models import ModelManager
from inferd.server.monitoring.settings import monitor_settings
from inferd.server.monitoring.worker import Monitoring
from inferd.server.ports import port_free
from inferd.server.repository import ModelRepository
from inferd.server.request_bytes import RequestBytes
from inferd.server.response_cache import ResponseCache
from inferd.server.routing import Router
from inferd.server.scheduler.loop_load import LoopLoad
from inferd.server.settings import ServerConfig, check
from inferd.server.telemetry import Telemetry
from inferd.server.telemetry.metrics import GpuCollector, Metrics, MetricsServer, multiprocess_dir
from inferd.server.telemetry.tracing import Tracing, TracingConfigError, exporter_names
from inferd.server.telemetry.triton_metrics import TritonMetrics
from inferd.server.tls import TlsConfigError

__all__ = ["QUIET_S", "InferdServer", "ServerConfig", "StartupError", "serve"]

log = logging.getLogger("inferd.app")

#: No inference call for this long on a draining server: clients have stopped sending.
QUIET_S = 0.05
#: Before the transport closes: no call for this long, with refusals held, and
#: then how long refusals stay held once gRPC's shutdown (its GOAWAY) began.
#: Longer than QUIET_S because a caller on a busy machine can take that long
#: to send its next call, and gRPC's own threads to write the GOAWAY.
CLOSE_QUIET_S = 0.25


class StartupError(Exception):
    """The server cannot start; the message is one line for the operator."""


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
            check(config)
            if not Path(config.model_repository).is_dir():
                # To the operator, as given (a RepositoryError names only the
                # last part: its messages may travel to callers).
                raise StartupError(
                    f"model repository '{config.model_repository}' is not a directory"
                )
            repository = ModelRepository(
                config.model_repository,
                allow_links_outside=config.allow_links_outside_repository,
            )
        except Exception as exc:
            raise StartupError(str(exc)) from None
        state_dir = config.state_dir or repository.root / ".inferd"
        self._owns_tracing = tracing is None
        if tracing is None:
            try:
                tracing = Tracing.from_env(SERVER_VERSION)
            except TracingConfigError as exc:
                raise StartupError(str(exc)) from None
        self.tracing = tracing
        self.metrics: Metrics | None = None
        triton: TritonMetrics | None = None
        if config.metrics_port is not None:
            # Under a supervisor (multiprocess mode) it reports process and
            # GPU metrics for everyone; a lone server reports its own.
            alone = multiprocess_dir() is None
            self.metrics = Metrics(process=alone, gpu=GpuCollector() if alone else None)
            if config.triton_metrics:
                triton = TritonMetrics(self.metrics.registry)
        self.monitoring: Monitoring | None = None
        if self.metrics is not None and config.monitoring:
            self.monitoring = Monitoring(
                monitor_settings(config), self.metrics.registry, repository.root
            )
        self.telemetry = Telemetry(self.metrics, tracing, triton, self.monitoring)
        self.response_cache = (
            ResponseCache(config.response_cache_bytes, self.telemetry)
            if config.response_cache_bytes
            else None
        )
        self.models = ModelManager(
            repository,
            default_max_batch_size=config.default_max_batch_size,
            observer=self.telemetry,
            engine_timeout_s=config.engine_timeout_s,
            failure_threshold=config.engine_failure_threshold,
            probe_interval_s=config.health_probe_interval_s,
            strict_readiness=config.strict_readiness,
            response_cache=self.response_cache,
            loop_load=LoopLoad() if config.loop_bound_batching else None,
        )
        self.router = Router(self.models, observer=self.telemetry)
        if self.monitoring is not None:
            self.monitoring.pairs = self.router.pairs
        self.lifecycle = LifecycleController(
            self.models,
            self.router,
            StateStore(state_dir),
            AuditLog(config.audit_dir or state_dir),
            mode=ModelControlMode(config.model_control_mode),
            repository_poll_s=config.repository_poll_s,
            state_poll_s=config.state_poll_s,
        )
        self.dataplane = DataPlane(
            self.models,
            router=self.router,
            enforce_model_roles=config.roles_enforced,
            tracing=tracing,
            log_requests=config.log_requests,
        )
        self.servicer = InferenceServicer(
            self.dataplane,
            lifecycle=self.lifecycle,
            limits=config.request_limits,
            stream_max_inflight=config.stream_max_inflight,
            stream_max_buffered_bytes=config.stream_max_buffered_bytes,
        )
        self.admin = AdminServicer(self.lifecycle, self.monitoring)
        self.health = HealthReporter(self.models)
        try:
            self.certificates = load_certificates(config)  # fail at start, not at a handshake
            self.authenticator = load_authenticator(config)
            self.certificate_roles = load_certificate_roles(config)
        except (TlsConfigError, AuthConfigError) as exc:
            raise StartupError(str(exc)) from None
        #: Required role per method (server.auth); register an added service's
        #: methods here before ``start`` (methods not in it need ``admin``).
        self.method_policy = MethodPolicy()
        self.method_policy.register({method: ROLE_ADMIN for method in ADMIN_METHODS})
        self.gate = AuthGate(
            self.authenticator,
            self.certificate_roles,
            self.method_policy,
            allow_unauthenticated_admin=config.allow_unauthenticated_admin,
        )
        self._interceptors = tuple(interceptors)
        #: Request-message bytes held by calls in flight (server.request_bytes).
        self.request_bytes = RequestBytes(config.inflight_request_bytes)
        #: Calls admitted at once, gRPC and HTTP together (server.admission_limits).
        self.admission = AdmissionLimits(config.max_concurrent_rpcs, self.request_bytes)
        #: The HTTP/REST front end (None: ``allow_http`` is off).
        self.http: HttpServer | None = None
        if config.allow_http:
            self.http = HttpServer(
                self.dataplane,
                lifecycle=self.lifecycle,
                limits=config.request_limits,
                max_body_bytes=config.max_message_bytes,
                gate=self.gate,
                certificates=self.certificates,
                admission=self.admission,
            )
        self._server: grpc.aio.Server | None = None
        self._metrics_server: MetricsServer | None = None
        self.port = 0
        #: The bound HTTP/REST port (0: not serving).
        self.http_port = 0
        #: The bound ``/metrics`` port (0: not serving).
        self.metrics_port = 0

    def _all_interceptors(self) -> list[grpc.aio.ServerInterceptor[Any, Any]]:
        # Who may call, then the RPC limit and the bytes budget, before the
        # request is read: a refused caller takes no slot.
        auth = auth_interceptor(self.gate, self.certificates)
        return [CallGate(auth, CallLimit(self.admission)), *self._interceptors]

    async def start(self, *, load: bool = True) -> int:
        """Bind, serve, load the models; returns the bound port."""
        config = self.config
        if not config.reuse_port and not port_free(config.host, config.grpc_port):
            # Checked first, ahead of gRPC and health, so the operator gets one
            # clear line: no core log, no health or drain lines about a server
            # that never served.
            address = f"{config.host}:{config.grpc_port}"
            raise StartupError(f"cannot listen on {address}: address already in use")
        if config.gil_switch_interval_s:
            sys.setswitchinterval(config.gil_switch_interval_s)  # before warmup measures
        interceptors = self._all_interceptors()
        watchers = WatchBudget(config.max_watch_streams, config.max_watch_streams_per_connection)
        server = grpc.aio.server(
            options=config.grpc_options(),
            interceptors=interceptors or None,
        )
        budget = self.request_bytes
        add_servicer(
            pb_grpc.add_GRPCInferenceServiceServicer_to_server, self.servicer, server, budget
        )
        add_servicer(admin_grpc.add_ModelAdminServicer_to_server, self.admin, server, budget)
        add_budgeted(
            health_pb2_grpc.add_HealthServicer_to_server, self.health.servicer, server, watchers
        )
        await self.health.prepare()
        if config.reflection:
            names = (
                pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
                admin_pb.DESCRIPTOR.services_by_name["ModelAdmin"].full_name,
                health.SERVICE_NAME,
                reflection.SERVICE_NAME,
            )
            add_budgeted(
                reflection_pb2_grpc.add_ServerReflectionServicer_to_server,
                ReflectionServicer(names),
                server,
                watchers,
            )
        address = f"{config.host}:{config.grpc_port}"
        self._start_metrics()
        if self.monitoring is not None:
            self.monitoring.start()
        try:
            if self.certificates is not None:
                port = server.add_secure_port(address, self.certificates.credentials())
            else:
                port = server.add_insecure_port(address)
        except TlsConfigError as exc:
            self._stop_metrics()
            raise StartupError(str(exc)) from None
        except RuntimeError:
            port = 0
        if port == 0:
            self._stop_metrics()
            raise StartupError(f"cannot listen on {address}: address in use or not available")
        await server.start()
        self._server = server
        self.port = port
        if self.tracing is not None:
            self.tracing.serve_at(config.host, port)
        if self.http is not None:
            await self._start_http()
        log.info(
            "listening on %s:%d (%s)%s",
            config.host,
            port,
            transport_name(self.certificates),
            f", HTTP/REST on port {self.http_port}" if self.http_port else "",
            extra={
                "event": "listening",
                "grpc_port": port,
                "http_port": self.http_port or None,
                "metrics_port": self.metrics_port or None,
                "tracing": exporter_names() if self._owns_tracing else ["custom"],
            },
        )
        if self.authenticator is not None and self.certificates is None:
            log.warning("bearer credentials are accepted over plaintext; enable TLS off localhost")
        self.gate.log_control_plane()
        await self.lifecycle.start(load=load, load_models=self.config.load_models)
        self.models.mark_started()
        if config.gc_freeze:
            gc.collect()
            gc.freeze()
        if load:
            # READY only after warmup: the load above includes it.
            await self.health.mark_started()
        return port

    async def _start_http(self) -> None:
        assert self.http is not None
        config = self.config
        address = f"{config.host}:{config.http_port}"
        if not config.reuse_port and not port_free(config.host, config.http_port):
            await self._abort_start()
            raise StartupError(f"cannot listen on {address} (HTTP): address already in use")
        try:
            self.http_port = await self.http.start(
                config.host, config.http_port, reuse_port=config.reuse_port
            )
        except OSError as exc:
            await self._abort_start()
            raise StartupError(f"cannot listen on {address} (HTTP): {exc.strerror}") from None

    async def _abort_start(self) -> None:
        self._stop_metrics()
        if self._server is not None:
            await self._server.stop(0)
            self._server = None

    def reload_credentials(self) -> None:
        """Re-read certificates, tokens and JWT keys (SIGHUP)."""
        log.info("reloading credentials")
        if self.certificates is not None:
            self.certificates.request_reload()
            if self.http is not None:
                self.http.reload_tls()
        if self.authenticator is not None:
            self.authenticator.reload()
        if self.certificate_roles is not None:
            self.certificate_roles.reload(force=True)

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
        """Drain and stop. Safe to call twice.

        Health turns NOT_SERVING and new inference is refused with
        UNAVAILABLE at once; then, for at most ``config.drain_settle_s``, the
        server waits until no call has arrived for ``QUIET_S`` (clients that
        watch health have moved away). Requests already admitted get up to
        ``grace`` seconds (default ``config.grace_s``) in all to finish,
        while further refusals wait for the transport's close. Then the
        transport closes (``_close_transport``) and the engines are
        released."""
        if self._server is None:
            # Never started (or stopped already): nothing to drain or report.
            await self._release()
            return
        grace = self.config.grace_s if grace is None else grace
        deadline = time.monotonic() + grace
        self.dataplane.draining = True
        await self.health.drain()
        await self._settle(min(deadline, time.monotonic() + self.config.drain_settle_s))
        # From here a refused gRPC caller waits for the transport's GOAWAY
        # (``_close_transport``), so it sends nothing more on this connection.
        self.dataplane.hold_refusals()
        try:
            if await self.dataplane.drain(max(0.0, deadline - time.monotonic())):
                log.info(
                    "drained: %d inference request(s) admitted since start, all answered",
                    self.dataplane.admitted,
                )
            else:
                log.warning(
                    "grace period over: %d of %d admitted request(s) still running are cancelled",
                    self.dataplane.inflight,
                    self.dataplane.admitted,
                )
            if self.http is not None:
                await self.http.stop()
            server, self._server = self._server, None
            await self._close_transport(server, deadline)
        finally:
            self.dataplane.release_refusals()
        await self._release()

    async def _release(self) -> None:
        """Close the data plane, lifecycle, engines, metrics and tracing."""
        await self.dataplane.close()
        await self.lifecycle.stop()
        await self.models.close()
        if self.monitoring is not None:
            await asyncio.to_thread(self.monitoring.stop)
        self._stop_metrics()
        if self._owns_tracing and self.tracing is not None:
            # Flush buffered spans (bounded by the exporter's own timeouts).
            await asyncio.to_thread(self.tracing.shutdown)
            self.tracing = None

    async def _close_transport(self, server: grpc.aio.Server, deadline: float) -> None:
        """Close gRPC so that no call is cut off: gRPC cancels (CANCELLED, no
        reason) a call that reaches a connection after its shutdown began.
        Refusals are held (``stop``), so a caller waiting for one sends
        nothing more; once calls stop arriving (at most ``drain_settle_s``)
        the shutdown sends GOAWAY, and only then are the held refusals
        answered: the caller's next call goes to a new connection, refused
        at the closed port with UNAVAILABLE. Calls still open (idle streams,
        Watch) are given at most half a second more."""
        await self._settle(
            min(deadline, time.monotonic() + self.config.drain_settle_s), CLOSE_QUIET_S
        )
        hold = CLOSE_QUIET_S if self.dataplane.refusals_waiting else 0.0
        stopping = asyncio.create_task(
            server.stop(min(hold + 0.5, max(0.0, deadline - time.monotonic())))
        )
        # The shutdown starts when the task first runs; its GOAWAY is then
        # written by gRPC's own threads.
        await asyncio.sleep(min(hold, max(0.0, deadline - time.monotonic())))
        self.dataplane.release_refusals()
        await stopping

    async def _settle(self, until: float, quiet_s: float = QUIET_S) -> None:
        """Wait until clients stop sending (no call for ``quiet_s``) or ``until``."""
        while (now := time.monotonic()) < until:
            quiet_for = now - self.dataplane.last_call
            if quiet_for >= quiet_s:
                return
            await asyncio.sleep(min(quiet_s - quiet_for, until - now))

    async def wait(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()


async def serve(config: ServerConfig) -> None:
    """Run until SIGTERM or SIGINT, then drain and return. SIGHUP reloads
    certificates, tokens and JWT keys."""
    server = InferdServer(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, server.reload_credentials)
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
        config.grace_s,
        extra={"event": "shutdown"},
    )
    await server.stop()
    log.info("stopped")
