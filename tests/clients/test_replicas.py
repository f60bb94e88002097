"""Our client over several inferd replicas: round robin spreads the load,
retries move refused calls to another replica, and a replica stopped with
SIGTERM mid-run costs no request."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from inferd.clients import InferenceClient, InferenceServerError, RetryPolicy

ROOT = Path(__file__).resolve().parents[2]
MODEL = "digits_mlp"
PIXELS = np.zeros((1, 64), np.float32)


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _inferences(address: str) -> int:
    """Rows this replica has run for MODEL (ModelStatistics inference_count)."""
    with InferenceClient(address) as client:
        stats = client.model_statistics(MODEL, timeout=10)["model_stats"]
    return sum(int(s.get("inference_count", 0)) for s in stats)


def _wait_ready(address: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"inferd on {address} exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with InferenceClient(address) as client:
                if client.is_server_ready(timeout=1):
                    return
        except InferenceServerError:
            pass
        time.sleep(0.2)
    pytest.fail(f"inferd on {address} not ready within 90 s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def replicas(
    demo_repository: Path, tmp_path: Path
) -> Iterator[list[tuple[str, subprocess.Popen[bytes], Path]]]:
    """Three ``inferd serve`` processes on 127.0.0.1, as the pods of a Deployment."""
    started: list[tuple[str, subprocess.Popen[bytes], Path]] = []
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        for port in _free_ports(3):
            log = tmp_path / f"inferd-{port}.log"
            with log.open("wb") as out:
                proc = subprocess.Popen(
                    [
                        *(sys.executable, "-m", "inferd", "serve"),
                        *("--model-repository", str(demo_repository)),
                        *("--grpc-port", str(port), "--host", "127.0.0.1", "--grace-s", "5"),
                    ],
                    cwd=ROOT,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=out,
                )
            started.append((f"127.0.0.1:{port}", proc, log))
        for address, proc, log in started:
            _wait_ready(address, proc, log)
        yield started
    finally:
        for _, proc, _ in started:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for _, proc, _ in started:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def _target(addresses: list[str]) -> str:
    return "ipv4:" + ",".join(addresses)


def test_round_robin_spreads_load_and_a_sigterm_mid_run_loses_nothing(
    replicas: list[tuple[str, subprocess.Popen[bytes], Path]],
) -> None:
    addresses = [address for address, _, _ in replicas]
    client = InferenceClient(_target(addresses), load_balancing="round_robin", retry=RetryPolicy())
    try:
        # Connect to every replica (round robin uses a replica once its
        # connection is up), then measure the spread from here.
        for _ in range(30):
            client.infer(MODEL, {"pixels": PIXELS}, timeout=30)
        before = [_inferences(a) for a in addresses]
        for _ in range(90):
            client.infer(MODEL, {"pixels": PIXELS}, timeout=30)
        spread = [_inferences(a) - b for a, b in zip(addresses, before, strict=True)]
        assert sum(spread) == 90
        assert min(spread) >= 20, spread  # 30 each when every connection is up

        # Now six threads send continuously; one replica gets SIGTERM mid-run.
        victim_address, victim, victim_log = replicas[1]
        total, kill_at = 3000, 1000
        sent = ok = 0
        errors: list[str] = []
        lock = threading.Lock()

        def sender() -> None:
            nonlocal sent, ok
            while True:
                with lock:
                    if sent >= total:
                        return
                    sent += 1
                try:
                    client.infer(MODEL, {"pixels": PIXELS}, timeout=30)
                except InferenceServerError as exc:
                    with lock:
                        errors.append(str(exc))
                else:
                    with lock:
                        ok += 1

        before_run = _inferences(victim_address)
        threads = [threading.Thread(target=sender) for _ in range(6)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 60
        while sent < kill_at and time.monotonic() < deadline:
            time.sleep(0.005)
        victim_share = _inferences(victim_address) - before_run
        victim.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(90)
        assert not any(t.is_alive() for t in threads)

        assert victim.wait(30) == 0, victim_log.read_text()[-3000:]
        assert victim_share > 0  # it was taking its share when it was stopped
        assert errors == []
        assert (sent, ok) == (total, total)
        # The survivors answered the rest.
        assert all(_inferences(a) > 0 for a in (addresses[0], addresses[2]))
    finally:
        client.close()


def _drain_one(make_server: Callable[..., Any], repo: Path) -> tuple[Any, Any]:
    healthy = make_server(repo)
    draining = make_server(repo)
    draining.server.dataplane.draining = True  # refuses inference with UNAVAILABLE
    return healthy, draining


def test_retries_move_refused_calls_to_another_replica(
    make_server: Callable[..., Any], demo_repository: Path
) -> None:
    healthy, draining = _drain_one(make_server, demo_repository)
    target = _target([healthy.address, draining.address])
    refused = 0
    with InferenceClient(target, load_balancing="round_robin", health_check=False) as plain:
        for _ in range(20):
            try:
                plain.infer(MODEL, {"pixels": PIXELS}, timeout=30)
            except InferenceServerError as exc:
                assert exc.code == grpc.StatusCode.UNAVAILABLE
                refused += 1
    assert refused > 0  # without retries the draining replica's refusals reach the caller
    with InferenceClient(
        target, load_balancing="round_robin", retry=RetryPolicy(), health_check=False
    ) as client:
        for _ in range(40):
            client.infer(MODEL, {"pixels": PIXELS}, timeout=30)
    assert _inferences(draining.address) == 0


def test_shutdown_waits_for_quiet_at_most_drain_settle_s(
    make_server: Callable[..., Any], demo_repository: Path
) -> None:
    """A client that never stops sending (it does not watch health) holds the
    shutdown at most ``drain_settle_s``, not the whole grace."""
    server = make_server(demo_repository, drain_settle_s=0.3, grace_s=20)
    stop = threading.Event()

    def hammer() -> None:
        with InferenceClient(server.address) as client:
            while not stop.is_set():
                try:
                    client.infer(MODEL, {"pixels": PIXELS}, timeout=5)
                except InferenceServerError:
                    time.sleep(0.001)  # refused while draining; keep sending

    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        time.sleep(0.3)
        start = time.monotonic()
        server.call(server.server.stop())
        elapsed = time.monotonic() - start
    finally:
        stop.set()
        thread.join(30)
    assert elapsed < 5, elapsed  # unbounded, it would wait out the 20 s grace
