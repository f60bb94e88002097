"""Code that points at a documentation page (``docs/experiments/stall-clip.md``,
``docs/protocol.md#limits``) points at one that exists, and the experiments
index lists every experiment page."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("server", "engines", "clients", "protos", "benchmarks", "deploy", "tests")
SUFFIXES = {".py", ".proto", ".yaml", ".yml", ".toml", ".pbtxt", ".json"}

_POINTER = re.compile(r"(?<![\w/.-])(docs/[\w/.-]+\.md)(?:#([\w-]+))?")
_HEADING = re.compile(r"^#+\s+(.*)$", re.MULTILINE)


def _slug(heading: str) -> str:
    text = re.sub(r"[`*_]", "", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def broken_pointers(text: str) -> list[str]:
    """The ``docs/...md[#heading]`` pointers in ``text`` with no such page or heading."""
    problems = []
    for page, anchor in _POINTER.findall(text):
        path = ROOT / page
        if not path.is_file():
            problems.append(page)
        elif anchor and anchor not in {_slug(h) for h in _HEADING.findall(path.read_text())}:
            problems.append(f"{page}#{anchor}")
    return problems


def _source_files() -> list[Path]:
    return [
        path
        for top in SOURCES
        for path in sorted((ROOT / top).rglob("*"))
        if path.suffix in SUFFIXES and path.is_file() and "_pb2" not in path.name
    ]


def test_code_points_only_at_pages_that_exist() -> None:
    problems = [
        f"{path.relative_to(ROOT)}: {pointer}"
        for path in _source_files()
        if path != Path(__file__).resolve()
        for pointer in broken_pointers(path.read_text(encoding="utf-8", errors="replace"))
    ]
    assert problems == []


def test_broken_pointers_are_reported() -> None:
    text = (
        "(docs/experiments/stall-clip.md) docs/protocol.md#limits are fine;\n"
        "docs/experiments/max-wait-share.md and docs/protocol.md#no-such-part are not"
    )
    assert broken_pointers(text) == [
        "docs/experiments/max-wait-share.md",
        "docs/protocol.md#no-such-part",
    ]


def test_the_experiments_index_lists_every_page() -> None:
    folder = ROOT / "docs" / "experiments"
    index = (folder / "README.md").read_text(encoding="utf-8")
    linked = set(re.findall(r"\]\(([\w-]+\.md)\)", index))
    pages = {p.name for p in folder.glob("*.md")} - {"README.md"}
    assert pages - linked == set()
