"""The ``inferd`` command: ``serve``, ``infer``, ``models``, ``demo-models``,
``build-engine``.

Start-up errors print one ``error: ...`` line and exit 2; no traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

DEMO_ENV = "INFERD_DEMO_REPOSITORY"
#: Python's 5 ms default let a busy event loop keep an engine thread from
#: starting its batch: traces at 0.9x of capacity (batching_reference, one
#: engine thread) measured 1.1 ms (p50) and 3.3 ms (p90) from dispatch to the
#: thread starting, on ~10 ms batches; at 500 us, 0.9 and 1.4 ms.
DEFAULT_GIL_SWITCH_INTERVAL_US = 500.0


def default_demo_repository() -> Path:
    """Where ``inferd serve`` with no repository builds the bundled demo models."""
    env = os.environ.get(DEMO_ENV)
    if env:
        return Path(env)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "inferd" / "demo-models"


def _bool_flag(text: str) -> bool:
    """Triton spells its boolean flags' values true/false (1/0 and on/off too)."""
    value = text.strip().lower()
    if value in ("true", "1", "on", "yes"):
        return True
    if value in ("false", "0", "off", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {text!r}")


def _serve_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="run the gRPC inference server")
    p.add_argument(
        "--model-repository",
        type=Path,
        help="Triton-layout model repository (default: the bundled demo models, built on "
        f"first use under ${DEMO_ENV} or ~/.cache/inferd/demo-models)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--grpc-port", type=int, default=8001, help="gRPC port (default 8001)")
    p.add_argument(
        "--max-message-mb", type=int, default=64, help="largest gRPC message in MiB (default 64)"
    )
    p.add_argument(
        "--grace", type=float, default=30.0, help="seconds to drain on SIGTERM (default 30)"
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes sharing the port (SO_REUSEPORT); about one per core (default 1)",
    )
    p.add_argument(
        "--model-control-mode",
        default="none",
        choices=["none", "poll", "explicit"],
        help="none: load the repository at start; poll: also follow its changes; explicit: "
        "load --load-model models at start, then on request (inferd models load/unload)",
    )
    p.add_argument(
        "--repository-poll-secs",
        type=float,
        default=15.0,
        help="seconds between repository scans in poll mode (default 15)",
    )
    p.add_argument(
        "--load-model",
        action="append",
        default=[],
        metavar="NAME",
        help="explicit mode: a model to load at start (repeatable; '*' loads all)",
    )
    p.add_argument(
        "--state-dir",
        type=Path,
        help="shared route/stage state (routes.json) and audit log (audit.sqlite); "
        "default <model-repository>/.inferd",
    )
    p.add_argument(
        "--audit-dir",
        type=Path,
        help="where the audit log (audit.sqlite) lives, if not in the state directory",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve Prometheus metrics on http://HOST:PORT/metrics (default: no metrics); "
        "with --workers the supervisor serves the sum of all workers",
    )
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument(
        "--log-format",
        default="auto",
        choices=["auto", "json", "text"],
        help="json: one JSON object per line with trace ids; text: one readable line; "
        "auto (default): json unless stderr is a terminal",
    )
    p.add_argument(
        "--log-requests",
        action="store_true",
        help="log one line per inference request (off by default)",
    )
    p.add_argument(
        "--no-gc-freeze",
        dest="gc_freeze",
        action="store_false",
        help="do not freeze the loaded server's objects out of Python's garbage collector "
        "(frozen by default: a full collection of them stalls serving for tens of ms)",
    )
    p.add_argument(
        "--gil-switch-interval-us",
        type=float,
        default=DEFAULT_GIL_SWITCH_INTERVAL_US,
        metavar="US",
        help="how long the event loop may keep Python's interpreter lock from an engine "
        "thread that has work to start or answers to hand back, in microseconds "
        f"(default {DEFAULT_GIL_SWITCH_INTERVAL_US:g}; Python's own default is 5000; "
        "0 leaves Python's setting)",
    )
    p.add_argument(
        "--strict-readiness",
        type=_bool_flag,
        default=True,
        metavar="true|false",
        help="true (default): ServerReady only when every model is ready; false: once the "
        "start-up load is done, even if some models failed to load",
    )
    limits = p.add_argument_group("limits (README: Limits)")
    limits.add_argument(
        "--max-concurrent-rpcs",
        type=int,
        default=4096,
        help="concurrent RPCs before RESOURCE_EXHAUSTED; 0: no limit (default 4096)",
    )
    limits.add_argument(
        "--max-metadata-kb", type=int, default=16, help="largest request metadata in KiB (16)"
    )
    limits.add_argument(
        "--engine-timeout-ms",
        type=float,
        default=30_000,
        help="longest engine call before the model is marked unhealthy (default 30000)",
    )
    security = p.add_argument_group("security (README: Security)")
    security.add_argument("--tls-cert", type=Path, help="PEM certificate chain: serve TLS")
    security.add_argument("--tls-key", type=Path, help="PEM private key for --tls-cert")
    security.add_argument(
        "--tls-client-ca", type=Path, help="PEM CA bundle: require client certificates (mTLS)"
    )
    security.add_argument(
        "--auth-tokens", type=Path, help="JSON file of bearer tokens with names and roles"
    )
    security.add_argument("--jwt-keys", type=Path, help="PEM public keys or JWKS for JWTs")
    security.add_argument("--jwt-issuer", help="required JWT 'iss'")
    security.add_argument("--jwt-audience", help="required JWT 'aud'")
    p.add_argument(
        "--reflection", action="store_true", help="serve gRPC server reflection (grpcurl)"
    )
    spread = p.add_argument_group("load spreading across replicas (README: Running on Kubernetes)")
    spread.add_argument(
        "--max-connection-age-s",
        type=float,
        help="send clients a GOAWAY after about this many seconds (+-10%% jitter) so they "
        "reconnect and rebalance over replicas (default: never)",
    )
    spread.add_argument(
        "--max-connection-age-grace-s",
        type=float,
        help="then give calls still running on the old connection this long before it is "
        "closed (default: no limit; needs --max-connection-age-s)",
    )


def _serve(opts: argparse.Namespace) -> int:
    from inferd.server.app import ServerConfig, StartupError, serve
    from inferd.server.telemetry.logs import resolve_format

    # Resolved once here so workers (whose stderr is the same) agree.
    setup = functools.partial(_setup_logging, opts.log_level, resolve_format(opts.log_format))
    setup()
    repository = opts.model_repository
    if repository is None:
        try:
            repository = _build_demo(default_demo_repository())
        except ImportError as exc:
            return _error(_demo_missing(exc))
    if not 0 <= opts.grpc_port <= 65535:
        return _error(f"--grpc-port {opts.grpc_port} is not a port number")
    if not opts.repository_poll_secs > 0:
        return _error(f"--repository-poll-secs {opts.repository_poll_secs} must be positive")
    if opts.load_model and opts.model_control_mode != "explicit":
        return _error("--load-model needs --model-control-mode explicit")
    if opts.metrics_port is not None and not 0 <= opts.metrics_port <= 65535:
        return _error(f"--metrics-port {opts.metrics_port} is not a port number")
    if not 0 <= opts.gil_switch_interval_us <= 1e6:
        return _error(
            f"--gil-switch-interval-us {opts.gil_switch_interval_us:g} "
            "must be between 0 and 1000000"
        )
    if opts.jwt_keys is not None and not (opts.jwt_issuer and opts.jwt_audience):
        return _error("--jwt-keys needs --jwt-issuer and --jwt-audience")
    config = ServerConfig(
        model_repository=repository,
        host=opts.host,
        grpc_port=opts.grpc_port,
        max_message_bytes=opts.max_message_mb << 20,
        grace_seconds=opts.grace,
        model_control_mode=opts.model_control_mode,
        load_models=tuple(opts.load_model),
        repository_poll_seconds=opts.repository_poll_secs,
        state_dir=opts.state_dir,
        audit_dir=opts.audit_dir,
        metrics_port=opts.metrics_port,
        log_requests=opts.log_requests,
        gc_freeze=opts.gc_freeze,
        gil_switch_interval_s=opts.gil_switch_interval_us / 1e6 or None,
        max_concurrent_rpcs=opts.max_concurrent_rpcs or None,
        max_metadata_bytes=opts.max_metadata_kb << 10,
        engine_timeout_s=opts.engine_timeout_ms / 1e3,
        tls_cert_file=opts.tls_cert,
        tls_key_file=opts.tls_key,
        tls_client_ca_file=opts.tls_client_ca,
        auth_tokens_file=opts.auth_tokens,
        jwt_keys_file=opts.jwt_keys,
        jwt_issuer=opts.jwt_issuer,
        jwt_audience=opts.jwt_audience,
        reflection=opts.reflection,
        strict_readiness=opts.strict_readiness,
        max_connection_age_s=opts.max_connection_age_s,
        max_connection_age_grace_s=opts.max_connection_age_grace_s,
    )
    try:
        config.connection_age_options()
    except ValueError as exc:
        return _error(str(exc))
    if opts.workers < 1:
        return _error(f"--workers {opts.workers} must be at least 1")
    try:
        if opts.workers > 1:
            from inferd.server.workers import run_workers

            return run_workers(config, opts.workers, setup)
        _run(serve(config))
    except StartupError as exc:
        return _error(str(exc))
    return 0


def _setup_logging(level: str, fmt: str = "text") -> None:
    from inferd.server.telemetry.logs import setup_logging

    setup_logging(level, fmt)


def _run(main: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop  # the fast extra; a faster loop when it is installed

        uvloop.run(main)
    except ImportError:
        asyncio.run(main)


def _build_demo(dest: Path, *, force: bool = False) -> Path:
    # Imported here: its training stack (onnx, scikit-learn) is the optional `demo` extra.
    from inferd.server.demo_models import build_demo_repository

    return build_demo_repository(dest, force=force)


def _demo_missing(exc: ImportError) -> str:
    return (
        f"the demo models need the 'demo' extra (pip install 'inferd[demo]'): "
        f"{exc.name or exc} is not installed"
    )


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    # Client subcommands own their argument parsing.
    if args and args[0] in ("infer", "models"):
        from inferd.clients.cli import infer_main, models_main

        return (infer_main if args[0] == "infer" else models_main)(args[1:])
    if args and args[0] == "build-engine":
        from inferd.server.build_engine import main as build_engine_main

        return build_engine_main(args[1:])
    parser = argparse.ArgumentParser(prog="inferd", description="gRPC inference server")
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_parser(sub)
    sub.add_parser("infer", help="send one request (inferd infer --help)")
    sub.add_parser("models", help="list the server's models (inferd models --help)")
    sub.add_parser(
        "build-engine", help="build a TensorRT plan from an ONNX model (inferd build-engine --help)"
    )
    demo = sub.add_parser("demo-models", help="build the bundled demo model repository")
    demo.add_argument("dest", type=Path)
    demo.add_argument("--force", action="store_true")
    opts = parser.parse_args(args)
    if opts.command == "serve":
        return _serve(opts)
    if opts.command == "demo-models":
        try:
            print(_build_demo(opts.dest, force=opts.force))
        except FileExistsError as exc:
            return _error(str(exc))
        except ImportError as exc:
            return _error(_demo_missing(exc))
        return 0
    parser.error(f"unknown command {opts.command}")
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
