"""``manifest.json``: what a batch run read, with which model, and which parts are done.

Rewritten (to a temporary name, then renamed) after every finished part, so
after a kill it lists exactly the parts whose files are complete; a re-run
of the same job skips those and redoes the rest under the same names.
"""

from __future__ import annotations

import datetime
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inferd import __version__
from inferd.server.batch.errors import BatchError
from inferd.server.batch.reader import InputFile

MANIFEST = "manifest.json"
FORMAT = 1


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


def part_name(file_index: int, part_index: int) -> str:
    return f"part-{file_index:05d}-{part_index:06d}"


@dataclass
class PartRecord:
    """One finished part: its rows, how many were scored and how many set aside."""

    file: int
    part: int
    rows: int
    scored: int
    errors: int
    outputs_file: str
    errors_file: str | None = None


@dataclass
class Manifest:
    job: dict[str, Any]
    model: dict[str, Any]
    inputs: list[dict[str, Any]]
    started: str = field(default_factory=now_iso)
    finished: str | None = None
    parts: dict[str, PartRecord] = field(default_factory=dict)
    inferd_version: str = __version__

    def totals(self) -> dict[str, int]:
        records = self.parts.values()
        return {
            "rows": sum(p.rows for p in records),
            "scored": sum(p.scored for p in records),
            "errors": sum(p.errors for p in records),
            "parts": len(self.parts),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "inferd_version": self.inferd_version,
            "job": self.job,
            "model": self.model,
            "inputs": self.inputs,
            "started": self.started,
            "finished": self.finished,
            "complete": self.finished is not None,
            "totals": self.totals(),
            "parts": {name: vars(record) for name, record in sorted(self.parts.items())},
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2) + "\n"

    def save(self, folder: Path) -> None:
        write_atomic(folder, self.dumps())


def write_atomic(folder: Path, text: str) -> None:
    """The manifest's text under its name, complete (a kill leaves the old one)."""
    tmp = folder / f".{MANIFEST}.tmp"
    tmp.write_text(text)
    os.replace(tmp, folder / MANIFEST)


def input_entries(files: list[InputFile]) -> list[dict[str, Any]]:
    return [{"path": str(f.path), "size_bytes": f.size_bytes, "sha256": f.sha256} for f in files]


def resume(folder: Path, fresh: Manifest) -> Manifest:
    """``fresh`` with the finished parts of the run that left ``folder``'s
    manifest, if it is the same job on the same data and model version;
    parts whose files are gone are dropped (they are redone)."""
    path = folder / MANIFEST
    if not path.exists():
        return fresh
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BatchError(f"cannot read {path}: {exc}") from None
    for key in ("job", "inputs", "model"):
        if old.get(key) != getattr(fresh, key):
            raise BatchError(
                f"output folder {folder} holds another run's parts (different {key}); "
                "use an empty folder"
            )
    fresh.started = old.get("started", fresh.started)
    for name, record in old.get("parts", {}).items():
        part = PartRecord(**record)
        files = [part.outputs_file, *([part.errors_file] if part.errors_file else [])]
        if all((folder / f).exists() for f in files):
            fresh.parts[name] = part
    return fresh
