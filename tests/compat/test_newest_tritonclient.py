"""The newest tritonclient and inferd's client in one process, on a real server.

Services that already use ``tritonclient[grpc]`` get its protobuf (< 7 today)
and its ``inference`` descriptors; inferd's client has to import beside it. The
newest release is installed with ``pip install --target`` (once per session,
under pytest's tmp dir) and put first on the child's path, so the child sees it
and the protobuf it resolved instead of this environment's; the child is the
client side, the server runs here. A second target holds only the newest
protobuf, for inferd's client on it (this environment runs protobuf 6: the
grpcio-tools that writes the stubs requires it).

Needs the package index: skipped when pip cannot reach it, failed when pip
fails for any other reason.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
PROBE = Path(__file__).with_name("one_process_probe.py")
#: How pip reports an index it could not reach; any other failure fails the test.
NETWORK_ERROR = re.compile(
    r"NewConnectionError|Failed to establish a new connection|Temporary failure in name"
    r" resolution|Name or service not known|Network is unreachable|No route to host"
    r"|Connection refused|ConnectTimeout|Read timed out|ProxyError|Max retries exceeded"
)


def pip_install_target(target: Path, *args: str) -> None:
    """``pip install --target target *args``; skips the test if the index is unreachable."""
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    command += ["--retries", "1", "--timeout", "20", "--target", str(target), *args]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    if proc.returncode == 0:
        return
    output = proc.stdout + proc.stderr
    if found := NETWORK_ERROR.search(output):
        pytest.skip(f"pip could not reach the package index ({found.group(0)})")
    pytest.fail(f"{' '.join(command)} failed:\n{output[-4000:]}")


def version_in(target: Path, name: str) -> str:
    (dist,) = importlib.metadata.distributions(name=name, path=[str(target)])
    return dist.version


@pytest.fixture(scope="session")
def newest_tritonclient(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("newest-tritonclient")
    # --target installs every dependency there, so pip resolves the protobuf
    # this tritonclient accepts, whatever this environment holds.
    pip_install_target(target, "tritonclient[grpc]")
    return target


@pytest.fixture(scope="session")
def newest_protobuf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("newest-protobuf")
    pip_install_target(target, "--no-deps", "protobuf")
    return target


def run_probe(first_on_path: Path, server_address: str, *flags: str) -> dict[str, Any]:
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(first_on_path), str(REPO)])}
    proc = subprocess.run(
        [sys.executable, str(PROBE), "--url", server_address, *flags],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, f"probe failed:\n{proc.stderr[-6000:]}"
    report: dict[str, Any] = json.loads(proc.stdout)
    return report


def assert_our_calls(report: dict[str, Any]) -> None:
    meta = report["ours"]["metadata"]
    assert meta["name"] == "digits_mlp"
    assert meta["properties"]["owner"] == "inferd maintainers"
    assert len(report["ours"]["labels"]) == 3


@pytest.mark.parametrize("order", [(), ("--ours-first",)], ids=["triton-first", "ours-first"])
def test_newest_tritonclient_and_ours_in_one_process(
    newest_tritonclient: Path, server_address: str, order: tuple[str, ...]
) -> None:
    report = run_probe(newest_tritonclient, server_address, *order)
    # The child ran the target's tritonclient and protobuf, not this environment's.
    assert report["tritonclient"] == version_in(newest_tritonclient, "tritonclient")
    assert report["protobuf"] == version_in(newest_tritonclient, "protobuf")
    assert_our_calls(report)
    triton = report["triton"]
    assert triton["live"] is True
    assert triton["labels"] == report["ours"]["labels"]
    # tritonclient skips the model card (an unknown field to it) and reads the rest.
    assert "properties" not in triton["metadata"]
    assert triton["metadata"]["name"] == "digits_mlp"
    assert [i["name"] for i in triton["metadata"]["inputs"]] == ["pixels"]


def test_our_client_on_the_newest_protobuf(newest_protobuf: Path, server_address: str) -> None:
    report = run_probe(newest_protobuf, server_address, "--without-triton")
    assert report["protobuf"] == version_in(newest_protobuf, "protobuf")
    assert_our_calls(report)


def test_an_unreachable_index_skips(tmp_path: Path) -> None:
    with pytest.raises(pytest.skip.Exception, match="could not reach the package index"):
        pip_install_target(tmp_path, "--index-url", "http://127.0.0.1:9/simple", "tritonclient")


def test_other_pip_failures_fail(tmp_path: Path) -> None:
    with pytest.raises(pytest.fail.Exception, match="No matching distribution"):
        pip_install_target(tmp_path, "--no-index", "tritonclient")
