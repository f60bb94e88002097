"""``inferd serve --workers N``: N server processes sharing one port.

Python serves one event loop per process; to use more cores, each worker is a
whole server (own engines, schedulers, threads) bound to the same port with
SO_REUSEPORT, and the kernel spreads incoming connections across them. The
parent only supervises: it forwards SIGTERM/SIGINT so every worker drains,
and stops the rest if one dies. Past one host, scale with replicas
(Kubernetes/KServe), not more workers.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import multiprocessing.connection
import signal
from collections.abc import Callable
from types import FrameType

from server.app import ServerConfig, StartupError, _port_free

log = logging.getLogger("inferd.workers")


def _worker(config: ServerConfig, index: int, setup: Callable[[], None]) -> None:
    # Runs in a fresh (spawned) interpreter.
    from server.app import serve
    from server.cli import _run

    setup()
    log.info("worker %d starting", index)
    try:
        _run(serve(config))
    except StartupError as exc:
        log.error("worker %d cannot start: %s", index, exc)
        raise SystemExit(2) from None


def run_workers(config: ServerConfig, workers: int, setup: Callable[[], None]) -> int:
    """Serve with ``workers`` processes; returns the exit status."""
    if config.grpc_port == 0:
        raise StartupError("--workers needs a fixed --grpc-port (workers share it)")
    if not _port_free(config.host, config.grpc_port):
        raise StartupError(
            f"cannot listen on {config.host}:{config.grpc_port}: address already in use"
        )
    shared = dataclasses.replace(config, reuse_port=True)
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

    previous = {s: signal.signal(s, stop_all) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        for p in procs:
            p.start()
        log.info("started %d workers on %s:%d", workers, config.host, config.grpc_port)
        running = list(procs)
        while running:
            multiprocessing.connection.wait([p.sentinel for p in running])
            for p in [p for p in running if not p.is_alive()]:
                running.remove(p)
                if p.exitcode != 0 and not stopping:
                    log.error("%s exited with %s; stopping the others", p.name, p.exitcode)
                    stop_all()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0 if all(p.exitcode == 0 for p in procs) else 1
