"""The served process shortens Python's interpreter-lock switch interval.

An engine thread needs the lock to start a batch and to hand its answers
back; a busy event loop kept it for up to Python's 5 ms default, with the
engine idle meanwhile."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ServerThread

from inferd.server.app import ServerConfig
from inferd.server.settings import parse_serve_settings

ROOT = Path(__file__).resolve().parents[2]


def _interval(*args: str) -> float | None:
    return parse_serve_settings(args).values["gil_switch_interval_s"]  # type: ignore[no-any-return]


def test_cli_default_and_override() -> None:
    assert _interval() == 0.0005
    assert _interval("--gil-switch-interval-s", "0.0002") == 0.0002
    assert _interval("--gil-switch-interval-s", "0") is None  # leaves Python's setting


@pytest.mark.parametrize("value", ["-1", "2", "nan"])
def test_cli_refuses_an_interval_out_of_bounds(value: str, tmp_path: Path) -> None:
    # A subprocess: the CLI sets up the process's logging before it checks.
    done = subprocess.run(
        [sys.executable, "-m", "inferd", "serve", "--model-repository", str(tmp_path),
         "--gil-switch-interval-s", value],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: --gil-switch-interval-s {float(value):g} must be between 0 and 1 (seconds)"
    )


def test_server_sets_the_interval_it_is_given(demo_repository: Path) -> None:
    before = sys.getswitchinterval()
    server = ServerThread(
        ServerConfig(model_repository=demo_repository, grpc_port=0, gil_switch_interval_s=0.0004)
    ).start()
    try:
        assert sys.getswitchinterval() == pytest.approx(0.0004)
    finally:
        server.stop()
        sys.setswitchinterval(before)  # process wide: the rest of the session keeps its own


def test_embedded_server_leaves_the_interval_alone(demo_repository: Path) -> None:
    before = sys.getswitchinterval()
    server = ServerThread(ServerConfig(model_repository=demo_repository, grpc_port=0)).start()
    try:
        assert sys.getswitchinterval() == before
    finally:
        server.stop()
