"""Modules stay small enough to read: none of the shipped ones (generated
stubs aside) passes 500 lines. Split by responsibility when one grows."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 500


def _oversized(folders: tuple[str, ...], limit: int) -> dict[str, int]:
    sizes = {}
    for folder in folders:
        for path in (ROOT / folder).rglob("*.py"):
            if "_pb2" in path.name:
                continue
            lines = len(path.read_text().splitlines())
            if lines > limit:
                sizes[str(path.relative_to(ROOT))] = lines
    return sizes


def test_no_shipped_module_passes_the_limit() -> None:
    assert _oversized(("server", "engines", "clients", "protos"), LIMIT) == {}


def test_the_check_sees_a_large_module() -> None:
    assert _oversized(("server",), 1)  # every real module is over one line
