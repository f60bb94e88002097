"""``ServerConfig``: every server option with its default, unit and help.

The command line (``inferd serve --grace-s 25``) and the environment
(``INFERD_GRACE_S=25``) are generated from these fields
(server.settings.command_line); docs/protocol.md#limits gives the reasons behind
the limits' defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inferd.server.codec import (
    DEFAULT_MAX_ELEMENTS,
    DEFAULT_MAX_INPUTS,
    DEFAULT_MAX_OUTPUTS,
    DEFAULT_MAX_PARAMETERS,
    DEFAULT_MAX_TENSOR_BYTES,
    RequestLimits,
)
from inferd.server.grpc.stream_budget import (
    DEFAULT_STREAM_MAX_BUFFERED_BYTES,
    DEFAULT_STREAM_MAX_INFLIGHT,
)
from inferd.server.grpc.watch_budget import (
    DEFAULT_MAX_WATCH_STREAMS,
    DEFAULT_MAX_WATCH_STREAMS_PER_CONNECTION,
)
from inferd.server.monitoring.settings import MonitorSettings
from inferd.server.settings.checks import connection_age_options
from inferd.server.settings.options import KiB, MiB, OldFlag, described, option

MODEL_CONTROL_MODES = ("none", "poll", "explicit")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("auto", "json", "text")

_LIMITS = "limits (docs/protocol.md#limits)"
_CONNECTIONS = "connections"
_MODELS = "models and faults"
_SECURITY = "security (docs/security.md)"
_SPREAD = "load spreading across replicas (docs/kubernetes.md)"
_PROCESS = "process (inferd serve only)"
_MONITORING = "model monitoring (docs/monitoring.md)"


_MONITOR_DEFAULTS = MonitorSettings()


def _monitor(name: str, text: str, minimum: float) -> Any:
    """A monitoring option whose default is ``MonitorSettings``' own (stated once)."""
    default = getattr(_MONITOR_DEFAULTS, name)
    return option(default, group=_MONITORING, help=text, minimum=minimum)


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Everything ``InferdServer`` needs. Every limit has a safe default."""

    model_repository: Path = field(
        metadata=described(
            help="Triton-layout model repository (default: the bundled demo models, built on "
            "first use under $INFERD_DEMO_REPOSITORY or ~/.cache/inferd/demo-models)",
            serve_default=None,
            metavar="DIR",
        )
    )
    #: Loopback by default so a developer's server is not exposed by accident.
    host: str = option("127.0.0.1", help="address to bind; containers pass 0.0.0.0")
    #: Triton's gRPC port, so stock clients find us with their defaults.
    grpc_port: int = option(8001, help="gRPC port; 0 picks a free one")
    #: Triton's HTTP port. Embedding code (and tests) opt in, so a library
    #: user's ServerConfig does not take port 8000 by surprise.
    allow_http: bool = option(
        False,
        serve_default=True,
        help="serve the KServe V2 HTTP/REST protocol too (docs/http.md); false: gRPC only",
    )
    http_port: int = option(8000, help="HTTP/REST port; 0 picks a free one")

    # -- limits -------------------------------------------------------------------------------
    max_message_bytes: int = option(
        64 * MiB,
        group=_LIMITS,
        help="largest request message, checked before decoding (and after decompressing: a "
        "gzip bomb is refused); over it RESOURCE_EXHAUSTED",
        old_flags=(OldFlag("--max-message-mb", MiB, int),),
    )
    max_send_message_bytes: int | None = option(
        None, group=_LIMITS, help="largest response message (default: --max-message-bytes)"
    )
    #: Checked before any allocation: a hard stop for shapes whose product overflows.
    max_elements: int = option(
        DEFAULT_MAX_ELEMENTS, group=_LIMITS, help="largest tensor, in elements", minimum=1
    )
    #: Typed ``contents`` can expand up to 8x (an INT64 sent as 1-byte
    #: varints), so the message limit alone does not bound memory.
    max_tensor_bytes: int = option(
        DEFAULT_MAX_TENSOR_BYTES,
        group=_LIMITS,
        help="largest decoded tensor (BYTES elements count 48 bytes each plus their data)",
    )
    max_inputs: int = option(
        DEFAULT_MAX_INPUTS, group=_LIMITS, help="most inputs per request", minimum=1
    )
    max_outputs: int = option(
        DEFAULT_MAX_OUTPUTS, group=_LIMITS, help="most requested outputs per request", minimum=1
    )
    max_parameters: int = option(
        DEFAULT_MAX_PARAMETERS, group=_LIMITS, help="most parameters per request", minimum=1
    )
    max_metadata_bytes: int = option(
        16 * KiB,
        group=_LIMITS,
        help="largest request metadata (headers); over it RESOURCE_EXHAUSTED",
        old_flags=(OldFlag("--max-metadata-kb", KiB, int),),
    )
    #: One client cannot hold every slot; further calls wait in the client.
    max_concurrent_streams: int = option(
        256, group=_LIMITS, help="concurrent calls per HTTP/2 connection", minimum=1
    )
    #: gRPC's overload protection; off, clients queue instead of failing (docs/protocol.md).
    refuse_unreleased_streams: bool = option(
        False, group=_LIMITS, help="refuse streams over the limit counting unreleased calls"
    )
    #: Twice the default model queue; probes, metadata and watch streams are not counted.
    max_concurrent_rpcs: int | None = option(
        4096,
        group=_LIMITS,
        help="concurrent calls on the server, gRPC and HTTP together, before "
        "RESOURCE_EXHAUSTED (HTTP 429); health, readiness and metadata are not counted, nor "
        "health/reflection streams (--max-watch-streams); 0: no limit",
        zero_is_none=True,
        minimum=1,
    )
    #: Health/Watch and reflection need no credentials and stay open: capped
    #: apart, so they never take inference's or Health/Check's slots.
    max_watch_streams: int = option(
        DEFAULT_MAX_WATCH_STREAMS,
        group=_LIMITS,
        help="Health/Watch and reflection streams open on the server; over it RESOURCE_EXHAUSTED",
        minimum=1,
    )
    max_watch_streams_per_connection: int = option(
        DEFAULT_MAX_WATCH_STREAMS_PER_CONNECTION,
        group=_LIMITS,
        help="Health/Watch and reflection streams open on one connection",
        minimum=1,
    )

    #: Four largest messages: a few big callers at once, memory bounded by
    #: configuration (server.request_bytes says what it cannot bound).
    max_inflight_request_bytes: int | None = option(
        None,
        group=_LIMITS,
        help="request-message bytes held by unary calls and HTTP inference bodies across "
        "the server (default: 4 x --max-message-bytes); a message over it is not parsed and "
        "while it is full new calls are refused before they are read: RESOURCE_EXHAUSTED "
        "(HTTP 429)",
    )
    stream_max_inflight: int = option(
        DEFAULT_STREAM_MAX_INFLIGHT,
        group=_LIMITS,
        help="requests one ModelStreamInfer call may have running plus answers not yet "
        "written; when reached the server stops reading that stream until an answer is sent",
        minimum=1,
    )
    stream_max_buffered_bytes: int = option(
        DEFAULT_STREAM_MAX_BUFFERED_BYTES,
        group=_LIMITS,
        help="bytes of those requests' inputs and unwritten answers one stream may hold; "
        "when reached the server stops reading that stream",
        minimum=1,
    )

    # -- connections --------------------------------------------------------------------------
    #: Dead peers free their resources.
    keepalive_time_s: float = option(
        60.0, group=_CONNECTIONS, help="ping a connection idle this long"
    )
    keepalive_timeout_s: float = option(
        20.0, group=_CONNECTIONS, help="close a pinged connection that does not answer in this"
    )
    min_client_ping_interval_s: float = option(
        10.0, group=_CONNECTIONS, help="clients may ping at most this often", minimum=0
    )
    max_ping_strikes: int = option(
        2,
        group=_CONNECTIONS,
        help="faster pings tolerated before GOAWAY too_many_pings; 0: any number",
        minimum=0,
    )
    #: Off by default so a port in use is an error, not a silent second listener.
    reuse_port: bool = option(
        False, group=_CONNECTIONS, help="let several processes share the port (SO_REUSEPORT)"
    )

    # -- models, lifecycle and faults ---------------------------------------------------------
    grace_s: float = option(
        30.0,
        group=_MODELS,
        help="on SIGTERM, time admitted requests get to finish",
        old_flags=(OldFlag("--grace"),),
        minimum=0,
    )
    #: docs/experiments/loop-bound-batching.md
    loop_bound_batching: bool = option(
        True, group=_MODELS, help="wait up to 2 ms for fuller batches while the event loop is busy"
    )
    #: Requests over a model's max_batch_size are refused with INVALID_ARGUMENT.
    default_max_batch_size: int = option(
        64,
        group=_MODELS,
        help="max_batch_size of a model without config whose inputs all have a dynamic "
        "first dimension",
        minimum=0,
    )
    #: Far above any sane batch on CPU, short enough that a hang is noticed.
    engine_timeout_s: float | None = option(
        30.0,
        group=_MODELS,
        help="longest engine call, unless a model's config sets engine_timeout_ms; past it "
        "the call's requests get UNAVAILABLE and the model is marked unhealthy",
        old_flags=(OldFlag("--engine-timeout-ms", 1e-3),),
    )
    engine_failure_threshold: int = option(
        3, group=_MODELS, help="failed batches in a row before a model is probed", minimum=1
    )
    health_probe_interval_s: float = option(
        5.0, group=_MODELS, help="time between probes of an unhealthy model"
    )
    strict_readiness: bool = option(
        True,
        group=_MODELS,
        help="Triton's flag: ServerReady only once every model is ready (true), or once the "
        "start-up load is done even if some models failed (false; those show in "
        "RepositoryIndex with their reason and in ModelReady)",
    )
    model_control_mode: str = option(
        "none",
        group=_MODELS,
        choices=MODEL_CONTROL_MODES,
        help="none: load the repository at start; poll: also follow its changes; explicit: "
        "load --load-model models at start, then on request (inferd models load/unload)",
    )
    load_models: tuple[str, ...] = option(
        (),
        group=_MODELS,
        flag="--load-model",
        metavar="NAME",
        help="explicit mode: a model to load at start ('*' loads all); the flag repeats, "
        "the variable is comma-separated",
    )
    repository_poll_s: float = option(
        15.0,
        group=_MODELS,
        help="time between repository scans in poll mode",
        old_flags=(OldFlag("--repository-poll-secs"),),
    )
    #: Triton's local cache size (its --cache-config local,size=N); one cache
    #: shared by every model whose config has ``response_cache { enable: true }``.
    response_cache_bytes: int = option(
        0,
        group=_MODELS,
        minimum=0,
        help="size of the response cache, bytes, LRU by bytes (0: no cache); used by models "
        "whose config.pbtxt has response_cache { enable: true } (docs/ensembles-and-cache.md)",
        old_flags=(OldFlag("--response-cache-byte-size", kind=int),),
    )
    state_dir: Path | None = option(
        None,
        group=_MODELS,
        metavar="DIR",
        help="shared route/stage state (routes.json) and audit log (audit.sqlite); "
        "default <model-repository>/.inferd",
    )
    state_poll_s: float = option(
        1.0, group=_MODELS, help="time between checks of the state file for other replicas"
    )
    audit_dir: Path | None = option(
        None,
        group=_MODELS,
        metavar="DIR",
        help="where the audit log (audit.sqlite) lives, if not in the state directory",
    )

    # -- telemetry and process ----------------------------------------------------------------
    metrics_port: int | None = option(
        None,
        help="serve Prometheus metrics on http://HOST:PORT/metrics (default: no metrics); "
        "with --workers the supervisor serves the sum of all workers",
    )
    triton_metrics: bool = option(
        False,
        help="also export Triton's metric families (nv_inference_request_success, "
        "nv_inference_queue_duration_us...) with Triton's names, labels and units",
    )
    #: Workers record (multiprocess mode) and leave serving to their supervisor.
    serve_metrics: bool = option(True, help="serve /metrics from this process", public=False)
    log_requests: bool = option(False, help="log one line per inference request")
    # -- model monitoring (docs/monitoring.md) ------------------------------------------------
    monitoring: bool = option(
        True,
        group=_MONITORING,
        help="drift, input quality, feature freshness and cost metrics (needs --metrics-port)",
    )
    monitor_sample_rate: float = _monitor("sample_rate", "share of answered requests sampled", 0)
    monitor_reference_rows: int = _monitor(
        "reference_rows",
        "sampled rows captured as the reference of a model without monitoring/reference.json",
        1,
    )
    drift_window_rows: int = _monitor("window_rows", "sampled rows in a drift window", 4)
    drift_window_s: float = _monitor("window_s", "oldest sample a drift window keeps", 0.001)
    drift_min_rows: int = _monitor("min_rows", "fewest rows a window needs for a drift value", 1)
    drift_psi_threshold: float = _monitor("psi_threshold", "PSI over which drift alerts", 0)
    monitor_interval_s: float = _monitor("interval_s", "how often samples are processed", 0.001)
    cost_per_cpu_hour: float = _monitor("cost_per_cpu_hour", "price of a CPU core hour", 0)
    cost_per_gpu_hour: float = _monitor("cost_per_gpu_hour", "price of a GPU hour", 0)

    #: Freezing the loaded server (``gc.freeze``) spares later full
    #: collections from scanning it (docs/experiments/gc-freeze-and-gil-switch.md).
    #: Process wide: embedding code and tests, whose objects would be frozen
    #: too, leave it off.
    gc_freeze: bool = option(
        False,
        group=_PROCESS,
        serve_default=True,
        help="once the models are loaded, freeze their objects out of Python's garbage "
        "collector (a full collection of them stalls serving for tens of ms)",
    )
    #: ``sys.setswitchinterval``: an engine thread needs the interpreter lock
    #: to start a batch and to hand its answers back. Process wide, so only
    #: ``inferd serve`` sets it (docs/experiments/gc-freeze-and-gil-switch.md).
    gil_switch_interval_s: float | None = option(
        None,
        group=_PROCESS,
        serve_default=0.0005,
        zero_is_none=True,
        help="how long the event loop may keep Python's interpreter lock from an engine "
        "thread (Python's own default is 0.005; 0 leaves Python's setting)",
        old_flags=(OldFlag("--gil-switch-interval-us", 1e-6),),
    )
    workers: int = option(
        1,
        group=_PROCESS,
        help="server processes sharing the port (SO_REUSEPORT); about one per core",
        minimum=1,
    )
    log_level: str = option("INFO", group=_PROCESS, choices=LOG_LEVELS, help="log level")
    log_format: str = option(
        "auto",
        group=_PROCESS,
        choices=LOG_FORMATS,
        help="json: one JSON object per line with trace ids; text: one readable line; "
        "auto: json unless stderr is a terminal",
    )

    # -- load spreading across replicas ------------------------------------------------------
    #: gRPC core spreads the age by +-10% per connection; the GOAWAY makes the
    #: client reconnect, so long-lived connections rebalance after a scale-out.
    max_connection_age_s: float | None = option(
        None,
        group=_SPREAD,
        help="send clients a GOAWAY after about this long (+-10% jitter) so they reconnect "
        "and rebalance over replicas (default: never)",
    )
    max_connection_age_grace_s: float | None = option(
        None,
        group=_SPREAD,
        help="then give calls still running on the old connection this long before it is "
        "closed (default: no limit; needs --max-connection-age-s)",
    )
    #: Clients that watch health stop sending within milliseconds; closing
    #: earlier would cancel calls gRPC accepted but had not yet handed over
    #: (CANCELLED, which nobody retries).
    drain_settle_s: float = option(
        0.5,
        group=_SPREAD,
        help="on shutdown, wait up to this long (within the grace) until no call arrives "
        "before closing the transport",
        minimum=0,
    )

    # -- security -----------------------------------------------------------------------------
    tls_cert_file: Path | None = option(
        None,
        group=_SECURITY,
        metavar="PEM",
        help="certificate chain: serve TLS (reloaded on change and on SIGHUP)",
        old_flags=(OldFlag("--tls-cert", kind=Path),),
    )
    tls_key_file: Path | None = option(
        None,
        group=_SECURITY,
        metavar="PEM",
        help="private key for --tls-cert-file",
        old_flags=(OldFlag("--tls-key", kind=Path),),
    )
    tls_client_ca_file: Path | None = option(
        None,
        group=_SECURITY,
        metavar="PEM",
        help="CA bundle: require client certificates signed by it (mutual TLS)",
        old_flags=(OldFlag("--tls-client-ca", kind=Path),),
    )
    auth_tokens_file: Path | None = option(
        None,
        group=_SECURITY,
        metavar="JSON",
        help="bearer tokens with names and roles",
        old_flags=(OldFlag("--auth-tokens", kind=Path),),
    )
    jwt_keys_file: Path | None = option(
        None,
        group=_SECURITY,
        metavar="FILE",
        help="PEM public keys or JWKS for JWTs",
        old_flags=(OldFlag("--jwt-keys", kind=Path),),
    )
    jwt_issuer: str | None = option(None, group=_SECURITY, help="required JWT 'iss'")
    jwt_audience: str | None = option(None, group=_SECURITY, help="required JWT 'aud'")
    jwt_leeway_s: float = option(
        30.0, group=_SECURITY, help="clock skew tolerated on JWT exp/nbf", minimum=0
    )
    tls_client_roles_file: Path | None = option(
        None,
        group=_SECURITY,
        metavar="JSON",
        help="roles for client certificates by identity ('uri:...', 'dns:...', 'cn:...'); "
        "needs --tls-client-ca-file",
    )
    #: Off by default: a server that authenticates no one must not let anyone
    #: load or unload models (docs/security.md).
    allow_unauthenticated_admin: bool = option(
        False,
        group=_SECURITY,
        help="with no tokens, JWT keys or certificate roles configured, let every caller use "
        "the control plane (model load/unload, the admin service); default: refused",
    )
    reflection: bool = option(False, group=_SECURITY, help="serve gRPC server reflection (grpcurl)")
    #: Off by default: a link to /etc/passwd named config.pbtxt must not be read.
    allow_links_outside_repository: bool = option(
        False,
        group=_SECURITY,
        help="read model files whose symbolic links lead outside --model-repository "
        "(default: such a model fails to load)",
    )

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
    def inflight_request_bytes(self) -> int:
        """``max_inflight_request_bytes`` or its default."""
        return self.max_inflight_request_bytes or 4 * self.max_message_bytes

    @property
    def auth_enabled(self) -> bool:
        """Bearer tokens or JWTs are configured."""
        return self.auth_tokens_file is not None or self.jwt_keys_file is not None

    @property
    def roles_enforced(self) -> bool:
        """Callers have roles: tokens, JWTs or client-certificate roles are configured."""
        return self.auth_enabled or self.tls_client_roles_file is not None

    def grpc_options(self) -> list[tuple[str, int]]:
        send = self.max_send_message_bytes or self.max_message_bytes
        return [
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.max_send_message_length", send),
            ("grpc.max_metadata_size", self.max_metadata_bytes),
            ("grpc.absolute_max_metadata_size", self.max_metadata_bytes),
            ("grpc.max_concurrent_streams", self.max_concurrent_streams),
            ("grpc.http.overload_protection", 1 if self.refuse_unreleased_streams else 0),
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
