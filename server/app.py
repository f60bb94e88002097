"""Assemble and run the server: gRPC on an asyncio loop, models behind it.

``InferdServer`` binds first (so a taken port fails at once), starts
answering health checks, then loads the repository; ServerReady turns true
when every model has a ready version, grpc.health.v1 SERVING when the load
(with warmup) is done. ``stop`` drains: health goes NOT_SERVING, new work is
refused with UNAVAILABLE, admitted work finishes within the grace period.

Security (all off by default): TLS / mutual TLS (server.tls), bearer tokens
and JWTs with per-method roles (server.auth), one interceptor for all of it.

Telemetry (``server.telemetry``): metrics when ``metrics_port`` is set,
traces when the OTEL_* variables ask for them (or a ``Tracing`` is passed).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import signal
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from inferd.protos import grpc_service_pb2 as pb
from inferd.protos import grpc_service_pb2_grpc as pb_grpc
from inferd.protos.inferd.admin.v1 import admin_pb2 as admin_pb
from inferd.protos.inferd.admin.v1 import admin_pb2_grpc as admin_grpc
from inferd.server.admin import ADMIN_METHODS, AdminServicer
from inferd.server.audit import AuditLog
from inferd.server.auth import (
    ROLE_ADMIN,
    AuthConfigError,
    Authenticator,
    AuthInterceptor,
    JwtVerifier,
    MethodPolicy,
    TokenStore,
)
from inferd.server.codec import (
    DEFAULT_MAX_ELEMENTS,
    DEFAULT_MAX_INPUTS,
    DEFAULT_MAX_OUTPUTS,
    DEFAULT_MAX_PARAMETERS,
    DEFAULT_MAX_TENSOR_BYTES,
    RequestLimits,
)
from inferd.server.health import HealthReporter
from inferd.server.lifecycle.controller import LifecycleController, ModelControlMode
from inferd.server.lifecycle.state import StateStore
from inferd.server.models import ModelManager
from inferd.server.repository import ModelRepository
from inferd.server.routing import Router
from inferd.server.servicer import SERVER_VERSION, InferenceServicer
from inferd.server.telemetry import Telemetry
from inferd.server.telemetry.metrics import GpuCollector, Metrics, MetricsServer, multiprocess_dir
from inferd.server.telemetry.tracing import Tracing, TracingConfigError, exporter_names
from inferd.server.tls import CertificateFiles, TlsConfigError

log = logging.getLogger("inferd.app")

KiB = 1 << 10
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
    """Everything ``InferdServer`` needs. Every limit has a safe default;
    README "Limits" lists them with the reasons for each."""

    model_repository: Path
    #: Address to bind. 127.0.0.1 by default so a developer's server is not
    #: exposed by accident; containers pass 0.0.0.0.
    host: str = "127.0.0.1"
    #: 8001 is Triton's gRPC port, so stock clients find us with their defaults.
    #: 0 picks a free port (tests).
    grpc_port: int = 8001

    # -- limits -------------------------------------------------------------------------------
    #: Largest request message, bytes, checked by gRPC before decoding (and,
    #: for a compressed message, after decompressing it: a gzip bomb is refused
    #: at this size). Default 64 MiB fits a batch of 64 224x224x3 FP32 images
    #: with room to spare. Over it: RESOURCE_EXHAUSTED.
    max_message_bytes: int = 64 * MiB
    #: Largest response message, bytes; None: same as ``max_message_bytes``.
    max_send_message_bytes: int | None = None
    #: Largest tensor accepted, in elements; checked before any allocation.
    #: Default 2**28 (1 GiB of FP32): far above any one request, a hard stop
    #: for shapes whose product overflows.
    max_elements: int = DEFAULT_MAX_ELEMENTS
    #: Largest decoded tensor, bytes (BYTES elements count 48 bytes each plus
    #: their data). Default 256 MiB: typed ``contents`` can expand up to 8x
    #: (an INT64 sent as 1-byte varints), so the message limit alone does not
    #: bound memory.
    max_tensor_bytes: int = DEFAULT_MAX_TENSOR_BYTES
    #: Most inputs / requested outputs / parameters per request. Default 256
    #: each: far above real models, and it bounds per-request validation work.
    max_inputs: int = DEFAULT_MAX_INPUTS
    max_outputs: int = DEFAULT_MAX_OUTPUTS
    max_parameters: int = DEFAULT_MAX_PARAMETERS
    #: Largest request metadata (headers), bytes: ``grpc.max_metadata_size``
    #: and ``grpc.absolute_max_metadata_size``. Default 16 KiB holds a large
    #: JWT many times over. Over it: RESOURCE_EXHAUSTED.
    max_metadata_bytes: int = 16 * KiB
    #: Concurrent streams (calls) per HTTP/2 connection
    #: (``grpc.max_concurrent_streams``). Default 256: one client cannot hold
    #: every slot; further calls wait in the client for a stream.
    max_concurrent_streams: int = 256
    #: Concurrent RPCs on the whole server (``maximum_concurrent_rpcs``); a
    #: stream counts as one. Default 4096 (twice the default model queue);
    #: over it new calls, health checks included, get RESOURCE_EXHAUSTED at
    #: once. None: no limit.
    max_concurrent_rpcs: int | None = 4096
    #: Keepalive: the server pings a connection idle for ``keepalive_time_s``
    #: (default 60 s) and closes it when no answer comes within
    #: ``keepalive_timeout_s`` (default 20 s): dead peers free their resources.
    keepalive_time_s: float = 60.0
    keepalive_timeout_s: float = 20.0
    #: Clients may ping at most every ``min_client_ping_interval_s`` (default
    #: 10 s, idle connections included); after ``max_ping_strikes`` (default
    #: 2) faster pings the connection is closed with GOAWAY "too_many_pings".
    min_client_ping_interval_s: float = 10.0
    max_ping_strikes: int = 2

    # -- lifecycle and faults -----------------------------------------------------------------
    #: Seconds admitted requests get to finish on shutdown.
    grace_seconds: float = 30.0
    #: max_batch_size given to a model without config whose inputs all have a
    #: dynamic first dimension (requests over a model's max_batch_size are
    #: refused with INVALID_ARGUMENT).
    default_max_batch_size: int = 64
    #: Longest one engine call may run, seconds, unless a model's config sets
    #: ``engine_timeout_ms``. Past it the call's requests get UNAVAILABLE and
    #: the model is marked unhealthy (see server.batcher). Default 30 s: far
    #: above any sane batch on CPU, short enough that a hang is noticed.
    engine_timeout_s: float | None = 30.0
    #: Failed batches in a row after which a model is probed (and marked
    #: unhealthy if the probe fails too).
    engine_failure_threshold: int = 3
    #: Seconds between probes of an unhealthy model.
    health_probe_interval_s: float = 5.0
    #: Triton's --strict-readiness: ServerReady only once every model is
    #: ready (True), or once the start-up load is done even if some models
    #: failed (False; the failed ones show in RepositoryIndex and ModelReady).
    strict_readiness: bool = True
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
    #: Once the models are loaded and warm, collect and freeze everything
    #: alive (``gc.freeze``) so later full collections skip it. A full
    #: collection of the loaded server took 22-30 ms (measured: one every
    #: ~15 s at 400 requests/s), a stall that made a batch's requests late;
    #: frozen, it takes ~5 ms. Only for a process the server owns: the CLI
    #: turns it on (``--no-gc-freeze`` turns it off); embedding code and
    #: tests, whose objects would be frozen too, leave it off.
    gc_freeze: bool = False
    #: Seconds the thread holding Python's interpreter lock keeps it from a
    #: thread waiting for it (``sys.setswitchinterval``); None leaves it. An
    #: engine thread needs the lock to start a batch and to hand its answers
    #: back, and a busy event loop held it for up to Python's 5 ms. Process
    #: wide, so only the CLI sets it (``--gil-switch-interval-us``).
    gil_switch_interval_s: float | None = None

    # -- load spreading across replicas ------------------------------------------------------
    #: Close each client connection after about this many seconds
    #: (``grpc.max_connection_age_ms``; gRPC core spreads it by a random
    #: +-10% per connection): the client gets a GOAWAY, reconnects, and a
    #: load balancer or a DNS re-resolution can send it to another replica,
    #: so long-lived connections rebalance after a scale-out. None: never
    #: (gRPC's default).
    max_connection_age_s: float | None = None
    #: After that GOAWAY, calls still running on the old connection get this
    #: many seconds to finish (``grpc.max_connection_age_grace_ms``), then
    #: the connection is closed and they fail with UNAVAILABLE. None: no
    #: limit (a stream may hold the old connection open for good). Needs
    #: ``max_connection_age_s``.
    max_connection_age_grace_s: float | None = None
    #: On shutdown, after new calls start being refused (and health turns
    #: NOT_SERVING), wait up to this many seconds (within the grace) until
    #: no call has arrived for ``QUIET_S`` before closing the transport.
    #: Clients that watch health (round robin with health checks) stop
    #: sending within milliseconds; closing earlier would cancel the calls
    #: they sent in that moment, which gRPC has accepted but not yet handed
    #: to the server (they fail with CANCELLED, which nobody retries).
    #: Clients that do not watch health get the GOAWAY at most this late.
    drain_settle_s: float = 0.5

    # -- security -----------------------------------------------------------------------------
    #: PEM certificate chain and key: serve TLS instead of plaintext. Reloaded
    #: on change and on SIGHUP (server.tls).
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    #: PEM CA bundle: require client certificates signed by it (mutual TLS).
    tls_client_ca_file: Path | None = None
    #: JSON tokens file (server.auth): bearer tokens with names and roles.
    auth_tokens_file: Path | None = None
    #: JWT verification: public keys (PEM or JWKS), required issuer and audience.
    jwt_keys_file: Path | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    #: Clock skew tolerated on exp/nbf, seconds.
    jwt_leeway_s: float = 30.0
    #: Serve grpc.reflection (v1alpha) so grpcurl and friends can list the API.
    reflection: bool = False

    @property
    def request_limits(self) -> RequestLimits:
        return RequestLimits(
            max_elements=self.max_elements,
            max_tensor_bytes=self.max_tensor_bytes,
            max_inputs=self.max_inputs,
            max_outputs=self.max_outputs,
            max_parameters=self.max_parameters,
        )

    @property
    def auth_enabled(self) -> bool:
        return self.auth_tokens_file is not None or self.jwt_keys_file is not None

    def grpc_options(self) -> list[tuple[str, int]]:
        send = self.max_send_message_bytes or self.max_message_bytes
        return [
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.max_send_message_length", send),
            ("grpc.max_metadata_size", self.max_metadata_bytes),
            ("grpc.absolute_max_metadata_size", self.max_metadata_bytes),
            ("grpc.max_concurrent_streams", self.max_concurrent_streams),
            ("grpc.keepalive_time_ms", int(self.keepalive_time_s * 1000)),
            ("grpc.keepalive_timeout_ms", int(self.keepalive_timeout_s * 1000)),
            ("grpc.keepalive_permit_without_calls", 1),
            (
                "grpc.http2.min_ping_interval_without_data_ms",
                int(self.min_client_ping_interval_s * 1000),
            ),
            ("grpc.http2.max_ping_strikes", self.max_ping_strikes),
            ("grpc.so_reuseport", 1 if self.reuse_port else 0),
            *self.connection_age_options(),
        ]

    def connection_age_options(self) -> list[tuple[str, int]]:
        """``max_connection_age_s`` and its grace as gRPC server options."""
        return connection_age_options(self.max_connection_age_s, self.max_connection_age_grace_s)


#: No inference call for this long on a draining server: clients have stopped sending.
QUIET_S = 0.05

#: gRPC channel arguments are C ints.
_INT32_MAX = 2**31 - 1


def connection_age_options(age_s: float | None, grace_s: float | None) -> list[tuple[str, int]]:
    """``grpc.max_connection_age_ms`` / ``grpc.max_connection_age_grace_ms``;
    raises ValueError (naming the setting) for values gRPC would misread."""
    if age_s is None:
        if grace_s is not None:
            raise ValueError("max connection age grace needs a max connection age")
        return []
    options = [("grpc.max_connection_age_ms", _millis(age_s, "max connection age", minimum=1))]
    if grace_s is not None:
        grace_ms = _millis(grace_s, "max connection age grace", minimum=0)
        options.append(("grpc.max_connection_age_grace_ms", grace_ms))
    return options


def _millis(seconds: float, name: str, *, minimum: int) -> int:
    if not isinstance(seconds, int | float) or not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{name} must be a non-negative number of seconds, not {seconds!r}")
    millis = round(seconds * 1000)
    if millis < minimum:
        raise ValueError(f"{name} must be at least {minimum} ms, not {seconds!r} s")
    if millis > _INT32_MAX:
        raise ValueError(f"{name} must be at most {_INT32_MAX // 1000} s, not {seconds!r} s")
    return millis


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
        try:
            config.connection_age_options()  # refuse bad values at start
        except ValueError as exc:
            raise StartupError(str(exc)) from None
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
            engine_timeout_s=config.engine_timeout_s,
            failure_threshold=config.engine_failure_threshold,
            probe_interval_s=config.health_probe_interval_s,
            strict_readiness=config.strict_readiness,
        )
        self.router = Router(self.models, observer=self.telemetry)
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
            limits=config.request_limits,
            enforce_model_roles=config.auth_enabled,
            tracing=tracing,
            log_requests=config.log_requests,
        )
        self.admin = AdminServicer(self.lifecycle)
        self.health = HealthReporter(self.models)
        self.certificates = _certificates(config)
        self.authenticator = _authenticator(config)
        #: Required role per method (server.auth); register an added service's
        #: methods here before ``start`` (methods not in it need ``admin``).
        self.method_policy = MethodPolicy()
        self.method_policy.register({method: ROLE_ADMIN for method in ADMIN_METHODS})
        self._interceptors = tuple(interceptors)
        self._server: grpc.aio.Server | None = None
        self._metrics_server: MetricsServer | None = None
        self.port = 0
        #: The bound ``/metrics`` port (0: not serving).
        self.metrics_port = 0

    def _all_interceptors(self) -> list[grpc.aio.ServerInterceptor[Any, Any]]:
        mutual = self.certificates is not None and self.certificates.mutual
        auth: list[grpc.aio.ServerInterceptor[Any, Any]] = []
        if self.authenticator is not None or mutual:
            # Outermost: nothing runs for a caller who may not call.
            auth = [
                AuthInterceptor(self.authenticator, self.method_policy, peer_certificates=mutual)
            ]
        return [*auth, *self._interceptors]

    async def start(self, *, load: bool = True) -> int:
        """Bind, serve, load the models; returns the bound port."""
        config = self.config
        if config.gil_switch_interval_s:
            sys.setswitchinterval(config.gil_switch_interval_s)  # before warmup measures
        interceptors = self._all_interceptors()
        server = grpc.aio.server(
            options=config.grpc_options(),
            interceptors=interceptors or None,
            maximum_concurrent_rpcs=config.max_concurrent_rpcs,
        )
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(self.servicer, server)
        admin_grpc.add_ModelAdminServicer_to_server(self.admin, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health.servicer, server)
        await self.health.prepare()
        if config.reflection:
            reflection.enable_server_reflection(
                (
                    pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
                    admin_pb.DESCRIPTOR.services_by_name["ModelAdmin"].full_name,
                    health.SERVICE_NAME,
                    reflection.SERVICE_NAME,
                ),
                server,
            )
        address = f"{config.host}:{config.grpc_port}"
        if not config.reuse_port and not _port_free(config.host, config.grpc_port):
            # Checked ahead of gRPC so the operator gets one clear line, not a core log.
            raise StartupError(f"cannot listen on {address}: address already in use")
        self._start_metrics()
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
        log.info(
            "listening on %s:%d (%s)",
            config.host,
            port,
            self._transport(),
            extra={
                "event": "listening",
                "grpc_port": port,
                "metrics_port": self.metrics_port or None,
                "tracing": exporter_names() if self._owns_tracing else ["custom"],
            },
        )
        if self.authenticator is not None and self.certificates is None:
            log.warning("bearer credentials are accepted over plaintext; enable TLS off localhost")
        await self.lifecycle.start(load=load, load_models=self.config.load_models)
        self.models.mark_started()
        if config.gc_freeze:
            gc.collect()
            gc.freeze()
        if load:
            # READY only after warmup: the load above includes it.
            await self.health.mark_started()
        return port

    def _transport(self) -> str:
        if self.certificates is None:
            return "plaintext"
        return "mutual TLS" if self.certificates.mutual else "TLS"

    def reload_credentials(self) -> None:
        """Re-read certificates, tokens and JWT keys (SIGHUP)."""
        log.info("reloading credentials")
        if self.certificates is not None:
            self.certificates.request_reload()
        if self.authenticator is not None:
            self.authenticator.reload()

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
        ``grace`` seconds (default ``config.grace_seconds``) in all to
        finish. Then the transport closes: calls still open (idle streams,
        Watch) are given at most half a second more, and the engines are
        released."""
        grace = self.config.grace_seconds if grace is None else grace
        deadline = time.monotonic() + grace
        self.servicer.draining = True
        await self.health.drain()
        await self._settle(min(deadline, time.monotonic() + self.config.drain_settle_s))
        if await self.servicer.drain(max(0.0, deadline - time.monotonic())):
            log.info(
                "drained: %d inference request(s) admitted since start, all answered",
                self.servicer.admitted,
            )
        else:
            log.warning(
                "grace period over: %d of %d admitted request(s) still running are cancelled",
                self.servicer.inflight,
                self.servicer.admitted,
            )
        if self._server is not None:
            await self._server.stop(min(0.5, max(0.0, deadline - time.monotonic())))
            self._server = None
        await self.servicer.close()
        await self.lifecycle.stop()
        await self.models.close()
        self._stop_metrics()
        if self._owns_tracing and self.tracing is not None:
            # Flush buffered spans (bounded by the exporter's own timeouts).
            await asyncio.to_thread(self.tracing.shutdown)
            self.tracing = None

    async def _settle(self, until: float) -> None:
        """Wait until clients stop sending (no call for QUIET_S) or ``until``."""
        while (now := time.monotonic()) < until:
            quiet_for = now - self.servicer.last_call
            if quiet_for >= QUIET_S:
                return
            await asyncio.sleep(min(QUIET_S - quiet_for, until - now))

    async def wait(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()


def _certificates(config: ServerConfig) -> CertificateFiles | None:
    if config.tls_cert_file is None and config.tls_key_file is None:
        if config.tls_client_ca_file is not None:
            raise StartupError("a TLS client CA needs a server certificate and key as well")
        return None
    if config.tls_cert_file is None or config.tls_key_file is None:
        raise StartupError("TLS needs both a certificate and a key file")
    files = CertificateFiles(config.tls_cert_file, config.tls_key_file, config.tls_client_ca_file)
    try:
        files.load()  # fail at start, not at the first handshake
    except TlsConfigError as exc:
        raise StartupError(str(exc)) from None
    return files


def _authenticator(config: ServerConfig) -> Authenticator | None:
    if not config.auth_enabled:
        if config.jwt_issuer or config.jwt_audience:
            raise StartupError("a JWT issuer or audience needs a JWT keys file")
        return None
    try:
        tokens = TokenStore(config.auth_tokens_file) if config.auth_tokens_file else None
        jwts = None
        if config.jwt_keys_file is not None:
            jwts = JwtVerifier(
                config.jwt_keys_file,
                issuer=config.jwt_issuer or "",
                audience=config.jwt_audience or "",
                leeway_s=config.jwt_leeway_s,
            )
    except AuthConfigError as exc:
        raise StartupError(str(exc)) from None
    return Authenticator(tokens, jwts)


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
        config.grace_seconds,
        extra={"event": "shutdown"},
    )
    await server.stop()
    log.info("stopped")
