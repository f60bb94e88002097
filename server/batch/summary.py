"""The end of a batch run, as ``--summary FILE`` writes it, and its exit code."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inferd.server.batch.errors import EXIT_OK, EXIT_TOO_MANY_ERRORS
from inferd.server.batch.manifest import MANIFEST, Manifest
from inferd.server.batch.progress import log


@dataclass
class Summary:
    exit_code: int
    output: str
    model: dict[str, Any]
    #: rows, scored, errors (set aside), parts: over every run into this folder.
    totals: dict[str, int]
    #: Parts an earlier run had finished.
    parts_skipped: int
    elapsed_s: float
    #: Rows this run scored per second of scoring, reading, converting and
    #: writing included, loading the model not.
    rows_per_s: float
    error_fraction: float
    #: Share of the scoring time the engine was computing (None: ``--url``).
    engine_busy_fraction: float | None = None
    #: CPU seconds this process spent scoring (every thread; the model load not).
    scoring_cpu_s: float = 0.0
    message: str = ""

    def to_json(self) -> dict[str, Any]:
        return dict(vars(self))


def summarize(
    manifest: Manifest,
    folder: Path,
    max_error_fraction: float,
    *,
    skipped: int,
    elapsed_s: float,
    scoring_s: float,
    scoring_cpu_s: float,
    scored_now: int,
    engine_busy_s: float | None,
) -> Summary:
    totals = manifest.totals()
    fraction = totals["errors"] / totals["rows"] if totals["rows"] else 0.0
    code = EXIT_TOO_MANY_ERRORS if fraction > max_error_fraction else EXIT_OK
    message = (
        f"{totals['errors']} of {totals['rows']} rows set aside ({fraction:.4%}), more than "
        f"--max-error-fraction {max_error_fraction}; see the errors-*.parquet parts"
        if code
        else ""
    )
    log.info(
        "batch done: %d rows scored, %d set aside, %d parts (%d from an earlier run) in %s",
        totals["scored"],
        totals["errors"],
        totals["parts"],
        skipped,
        folder / MANIFEST,
        extra={"event": "batch_done", **totals},
    )
    busy = None
    if engine_busy_s is not None and scoring_s > 0:
        busy = round(engine_busy_s / scoring_s, 4)
    return Summary(
        code,
        str(folder),
        manifest.model,
        totals,
        skipped,
        round(elapsed_s, 3),
        round(scored_now / scoring_s, 1) if scoring_s > 0 else 0.0,
        fraction,
        busy,
        round(scoring_cpu_s, 3),
        message,
    )
