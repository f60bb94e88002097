"""Every source path (``server/dataplane.py``, ``engines/tensorrt/``) and
dotted module (``inferd.server.scheduler.latency``) that README.md and
docs/**/*.md name exists, so the pages cannot point at moved modules."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("server", "engines", "clients", "protos")

_PATH = re.compile(r"(?<![\w./-])((?:server|engines|clients|protos)/[\w/.-]*[\w/])")
_DOTTED = re.compile(r"(?<![\w.])inferd(?:\.\w+)+")


def _documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def _module_exists(dotted: str) -> bool:
    """``inferd.a.b`` names a package or module, or a name (``.Class.attr``)
    that its source defines or imports."""
    parts = dotted.split(".")[1:]
    if not parts or parts[0] not in PACKAGES:
        return True  # inferd.admin.v1 and the like are protocol packages, not modules
    for end in range(len(parts), 0, -1):
        base = ROOT.joinpath(*parts[:end])
        source = (
            base.with_suffix(".py") if base.with_suffix(".py").is_file() else base / "__init__.py"
        )
        if source.is_file():
            if end == len(parts):
                return True
            return re.search(rf"\b{parts[end]}\b", source.read_text(encoding="utf-8")) is not None
    return False


def stale_references(text: str) -> list[str]:
    """The source paths and dotted modules in ``text`` that do not exist."""
    problems = []
    for path in sorted(set(_PATH.findall(text))):
        if not (ROOT / path).exists():
            problems.append(path)
    for dotted in sorted(set(_DOTTED.findall(text))):
        if not _module_exists(dotted):
            problems.append(dotted)
    return problems


def test_docs_name_only_modules_that_exist() -> None:
    problems = [
        f"{doc.relative_to(ROOT)}: {ref}"
        for doc in _documents()
        for ref in stale_references(doc.read_text(encoding="utf-8"))
    ]
    assert problems == []


def test_moved_modules_are_reported() -> None:
    text = (
        "See server/servicer.py, engines/trt_engine.py and `inferd.server.batcher`;\n"
        "server/dataplane.py, server/grpc/, engines/tensorrt/plan.py,\n"
        "inferd.server.scheduler.latency.STALL_CLIP and inferd.clients are fine."
    )
    assert stale_references(text) == [
        "engines/trt_engine.py",
        "server/servicer.py",
        "inferd.server.batcher",
    ]
