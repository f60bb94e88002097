"""`pip install .` installs one import root, `inferd`, and everything under it."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from wheel_build import build_wheel

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    return zipfile.ZipFile(build_wheel(tmp_path_factory.mktemp("wheel")))


def test_the_wheel_installs_only_inferd_at_top_level(wheel: zipfile.ZipFile) -> None:
    top = {name.split("/")[0] for name in wheel.namelist()}
    dist_info = {t for t in top if t.endswith(".dist-info")}
    assert top - dist_info == {"inferd"}
    entry_points = wheel.read(f"{dist_info.pop()}/entry_points.txt").decode()
    assert "inferd = inferd.server.cli:main" in entry_points


def test_every_shipped_module_is_in_the_wheel(wheel: zipfile.ZipFile) -> None:
    """A new subpackage (a folder with __init__.py) is picked up without a list to edit."""
    names = set(wheel.namelist())
    expected = {
        f"inferd/{path.relative_to(ROOT).as_posix()}"
        for folder in ("server", "engines", "clients", "protos")
        for path in (ROOT / folder).rglob("*.py")
        if "__pycache__" not in path.parts
    }
    assert expected - names == set()
    assert {"inferd/__init__.py", "inferd/py.typed", "inferd/protos/grpc_service_pb2.pyi"} <= names


def test_benchmarks_and_tests_are_not_shipped(wheel: zipfile.ZipFile) -> None:
    assert not [n for n in wheel.namelist() if "/benchmarks/" in n or "/tests/" in n]
