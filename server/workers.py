"""``inferd serve --workers N``: N server processes sharing one port.

Python serves one event loop per process; to use more cores, each worker is a
whole server (own engines, schedulers, threads) bound to the same port with
SO_REUSEPORT, and the kernel spreads incoming connections across them. The
parent only supervises: it forwards SIGTERM/SIGINT so every worker drains,
SIGHUP so every worker reloads its credentials, and stops the rest if one
dies. Past one host, scale with replicas
(Kubernetes/KServe), not more workers.

With ``--metrics-port`` the workers record metrics in prometheus-client's
multiprocess mode (files in ``PROMETHEUS_MULTIPROC_DIR``; a fresh temporary
directory unless that variable names one, whose ``*.db`` files are then
cleared at start) and the parent serves ``/metrics``: one scrape sums every
worker, plus each worker's process metrics labelled ``worker``.
"""

from __future__ import annotations

import ctypes
import dataclasses
import glob
import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from types import FrameType

from inferd.server.app import ServerConfig, StartupError
from inferd.server.ports import port_free
from inferd.server.telemetry.metrics import (
    MULTIPROC_ENV,
    GpuCollector,
    MetricsServer,
    multiprocess_dir,
    supervisor_registry,
)

log = logging.getLogger("inferd.workers")

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _worker(config: ServerConfig, index: int, setup: Callable[[], None]) -> None:
    # Runs in a fresh (spawned) interpreter.
    from inferd.server.app import serve
    from inferd.server.cli import _run

    _die_with_parent()
    setup()
    log.info("worker %d starting", index)
    try:
        _run(serve(config))
    except StartupError as exc:
        log.error("worker %d cannot start: %s", index, exc)
        raise SystemExit(2) from None


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM this worker when the supervisor dies, even by
    SIGKILL, so no orphan keeps serving the port (the worker then drains)."""
    if sys.platform != "linux":
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        log.warning("cannot tie the worker's life to the supervisor's")


def run_workers(config: ServerConfig, workers: int, setup: Callable[[], None]) -> int:
    """Serve with ``workers`` processes; returns the exit status."""
    if config.grpc_port == 0:
        raise StartupError("--workers needs a fixed --grpc-port (workers share it)")
    if not port_free(config.host, config.grpc_port):
        raise StartupError(
            f"cannot listen on {config.host}:{config.grpc_port}: address already in use"
        )
    shared = dataclasses.replace(config, reuse_port=True, serve_metrics=False)
    live: dict[str, int] = {}  # worker index -> pid, for the metrics endpoint
    metrics: MetricsServer | None = None
    made_dir: str | None = None
    saved_env = os.environ.get(MULTIPROC_ENV)
    if config.metrics_port is not None:
        path = multiprocess_dir()
        if path is None:
            path = made_dir = tempfile.mkdtemp(prefix="inferd-metrics-")
        else:
            os.makedirs(path, exist_ok=True)
            for stale in glob.glob(os.path.join(path, "*.db")):
                os.remove(stale)  # a previous run's values would be summed in
        # Inherited by the spawned workers before they import prometheus_client.
        os.environ[MULTIPROC_ENV] = path
        try:
            metrics = MetricsServer(
                supervisor_registry(path, lambda: dict(live), GpuCollector()),
                config.host,
                config.metrics_port,
            )
        except OSError as exc:
            _cleanup_metrics(None, made_dir, saved_env)
            raise StartupError(str(exc)) from None
        log.info(
            "serving metrics of %d workers on %s:%d",
            workers,
            config.host,
            metrics.port,
            extra={"event": "metrics", "metrics_port": metrics.port, "multiproc_dir": path},
        )
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_worker, args=(shared, i, setup), name=f"inferd-worker-{i}")
        for i in range(workers)
    ]
    stopping = False

    def stop_all(signum: int = signal.SIGTERM, frame: FrameType | None = None) -> None:
        nonlocal stopping
        stopping = True
        for p in procs:
            if p.is_alive() and p.pid is not None:
                p.terminate()  # SIGTERM: the worker drains, then exits 0

    def reload_all(signum: int = signal.SIGHUP, frame: FrameType | None = None) -> None:
        for p in procs:
            if p.is_alive() and p.pid is not None:
                os.kill(p.pid, signal.SIGHUP)  # certificates, tokens, JWT keys

    previous = {s: signal.signal(s, stop_all) for s in (signal.SIGTERM, signal.SIGINT)}
    previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, reload_all)
    try:
        for i, p in enumerate(procs):
            p.start()
            if p.pid is not None:
                live[str(i)] = p.pid
        log.info(
            "started %d workers on %s:%d",
            workers,
            config.host,
            config.grpc_port,
            extra={"event": "startup", "workers": workers},
        )
        running = list(procs)
        while running:
            multiprocessing.connection.wait([p.sentinel for p in running])
            for p in [p for p in running if not p.is_alive()]:
                running.remove(p)
                live.pop(str(procs.index(p)), None)
                if metrics is not None and p.pid is not None:
                    from prometheus_client import multiprocess

                    multiprocess.mark_process_dead(p.pid)  # type: ignore[no-untyped-call]
                if p.exitcode != 0 and not stopping:
                    log.error(
                        "%s exited with %s; stopping the others",
                        p.name,
                        p.exitcode,
                        extra={"event": "error", "worker": p.name, "exitcode": p.exitcode},
                    )
                    stop_all()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _cleanup_metrics(metrics, made_dir, saved_env)
    return 0 if all(p.exitcode == 0 for p in procs) else 1


def _cleanup_metrics(
    metrics: MetricsServer | None, made_dir: str | None, saved: str | None
) -> None:
    if metrics is not None:
        metrics.close()
    if made_dir is not None:
        shutil.rmtree(made_dir, ignore_errors=True)
    if saved is None:
        os.environ.pop(MULTIPROC_ENV, None)
    else:
        os.environ[MULTIPROC_ENV] = saved
