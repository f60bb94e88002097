"""``inferd serve --workers N``: real processes sharing one port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from inferd.clients import InferenceClient

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found.extend(int(t) for t in text)
    # multiprocessing also starts a resource tracker; keep the servers only.
    return [c for c in found if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]


def _start(repo: Path, port: int, workers: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "inferd",
            "serve",
            "--model-repository",
            str(repo),
            "--grpc-port",
            str(port),
            "--workers",
            str(workers),
            "--grace-s",
            "5",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _wait_ready(address: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        try:
            with InferenceClient(address) as client:
                if client.is_server_ready(timeout=1):
                    return
        except Exception:
            pass
        time.sleep(0.2)
    raise TimeoutError("workers did not become ready")


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_workers_share_the_port_and_drain_on_sigterm(demo_repository: Path) -> None:
    port = _free_port()
    proc = _start(demo_repository, port, 2)
    address = f"127.0.0.1:{port}"
    try:
        _wait_ready(address, proc)
        workers = _children(proc.pid)
        assert len(workers) == 2
        # Each worker answers on its own connections; wait until both are ready.
        pixels = np.ones((1, 64), np.float32)
        for _ in range(16):  # new channel = new connection, spread by the kernel
            with InferenceClient(address) as client:
                # This connection's worker may still be loading: wait for it.
                deadline = time.monotonic() + 60
                while not client.is_server_ready(timeout=5) and time.monotonic() < deadline:
                    time.sleep(0.1)
                assert client.infer("digits_mlp", {"pixels": pixels})["label"].shape == (1, 1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        for pid in workers:
            assert (
                not Path(f"/proc/{pid}").exists()
                or "zombie" in Path(f"/proc/{pid}/status").read_text()
            )
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_a_dead_worker_stops_the_others_and_fails_the_parent(demo_repository: Path) -> None:
    port = _free_port()
    proc = _start(demo_repository, port, 2)
    try:
        _wait_ready(f"127.0.0.1:{port}", proc)
        first, second = _children(proc.pid)
        os.kill(first, signal.SIGKILL)
        assert proc.wait(30) == 1  # supervisor noticed and stopped the survivor
        assert (
            not Path(f"/proc/{second}/cmdline").exists()
            or not Path(f"/proc/{second}/cmdline").read_bytes()
        )
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def _gone(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    return not status.exists() or "zombie" in status.read_text()


@pytest.mark.skipif(sys.platform != "linux", reason="parent-death signal is Linux-only")
def test_workers_do_not_outlive_a_killed_supervisor(demo_repository: Path) -> None:
    port = _free_port()
    proc = _start(demo_repository, port, 2)
    try:
        _wait_ready(f"127.0.0.1:{port}", proc)
        workers = _children(proc.pid)
        proc.kill()  # SIGKILL: the supervisor cannot forward anything
        proc.wait()
        deadline = time.monotonic() + 30
        while not all(_gone(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert all(_gone(w) for w in workers), "orphaned workers kept running"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workers", "0"], "at least 1"),
        (["--workers", "2", "--grpc-port", "0"], "fixed --grpc-port"),
    ],
)
def test_bad_worker_options_exit_2_with_one_line(
    demo_repository: Path, args: list[str], message: str
) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "inferd",
            "serve",
            "--model-repository",
            str(demo_repository),
            *args,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
