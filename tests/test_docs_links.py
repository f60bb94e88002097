"""Relative links in README.md and docs/ point at files (and headings) that exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_LINK = re.compile(r"\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^\s*(```|~~~)")


def _slug(heading: str) -> str:
    # GitHub's anchor for a heading: lower case, punctuation dropped, spaces to '-'.
    text = re.sub(r"[`*_]", "", heading.strip()).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    anchors, in_fence = set(), False
    for line in path.read_text(encoding="utf-8").splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence and line.startswith("#"):
            anchors.add(_slug(line.lstrip("#")))
    return anchors


def broken_links(path: Path) -> list[str]:
    """Every relative link in ``path`` whose file or heading does not exist."""
    problems, in_fence = [], False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if _FENCE.match(line):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        for target in _LINK.findall(line):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            file_part, _, anchor = target.partition("#")
            dest = (path.parent / file_part).resolve() if file_part else path
            if not dest.exists():
                problems.append(f"{path.name}:{number}: {target}: no such file")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                problems.append(f"{path.name}:{number}: {target}: no such heading")
    return problems


def _documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def test_every_relative_link_resolves() -> None:
    documents = _documents()
    assert len(documents) > 1, "docs/ is missing"
    problems = [p for doc in documents for p in broken_links(doc)]
    assert problems == []


def test_checker_reports_missing_files_and_headings(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other page\n\n## A `code` heading\n")
    doc = tmp_path / "doc.md"
    doc.write_text(
        "# Title\n"
        "[ok](other.md) [ok](other.md#a-code-heading) [ok](#title) [web](https://x.y/z)\n"
        "[gone](missing.md) [bad anchor](other.md#nope) [bad local](#nope)\n"
        "```\n[in a code block](ignored.md)\n```\n"
    )
    assert broken_links(doc) == [
        "doc.md:3: missing.md: no such file",
        "doc.md:3: other.md#nope: no such heading",
        "doc.md:3: #nope: no such heading",
    ]
