"""The one-directional flow, checked on the source: engines know neither the
server nor protobuf, clients do not reach into the server, runtime code never
imports the benchmarks, and nothing uses the folders' old top-level names."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ("server", "engines", "clients", "protos")


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module


def _sources(folder: str) -> list[Path]:
    return sorted(p for p in (ROOT / folder).rglob("*.py") if not p.name.endswith("_pb2.py"))


def _violations(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    found = []
    for path in _sources(folder):
        for line, module in _imports(path):
            if any(module == f or module.startswith(f + ".") for f in forbidden):
                found.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    return found


def test_engines_import_neither_the_server_nor_protobuf() -> None:
    forbidden = ("inferd.server", "inferd.protos", "inferd.clients", "google.protobuf", "grpc")
    assert _violations("engines", forbidden) == []


def test_clients_do_not_import_the_server() -> None:
    assert _violations("clients", ("inferd.server", "inferd.engines")) == []


@pytest.mark.parametrize("folder", SHIPPED)
def test_runtime_code_never_imports_the_benchmarks(folder: str) -> None:
    assert _violations(folder, ("benchmarks",)) == []


@pytest.mark.parametrize("folder", [*SHIPPED, "benchmarks", "tests", "inferd"])
def test_nothing_imports_the_old_top_level_names(folder: str) -> None:
    """`server`, `clients`, ... exist only as `inferd.server`, `inferd.clients`."""
    assert _violations(folder, SHIPPED) == []


def test_the_rules_catch_a_violation(tmp_path: Path) -> None:
    """The scan itself sees both import forms (a check that cannot fail proves nothing)."""
    module = tmp_path / "m.py"
    module.write_text("import inferd.server.app\nfrom grpc import aio\nfrom . import x\n")
    assert [name for _, name in _imports(module)] == ["inferd.server.app", "grpc"]
