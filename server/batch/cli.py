"""``inferd batch MODEL --model-repository DIR --input PATH... --output DIR``.

Exit codes (docs/batch.md): 0 done, 1 more bad rows than
``--max-error-fraction``, 2 usage or model error, 3 unreadable input,
4 scoring failed. Errors are one ``error: ...`` line, no traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from inferd.server.batch.errors import EXIT_USAGE
from inferd.server.batch.job import DEFAULT_PART_ROWS
from inferd.server.extras import missing_module, needs_extra

DESCRIPTION = (
    "Score input files (Parquet, CSV, JSON Lines, .npy/.npz; paths or globs) with a model "
    "from a repository, loaded as `inferd serve` loads it, into Parquet parts plus "
    "manifest.json. Re-running the same command resumes: finished parts are skipped."
)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="inferd batch",
        description=DESCRIPTION,
        epilog="exit codes: 0 done; 1 more bad rows than --max-error-fraction; 2 usage or "
        "model error; 3 unreadable input file; 4 scoring failed (retry: it resumes). "
        "See docs/batch.md.",
    )
    p.add_argument("model", help="model name in the repository")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--model-repository", type=Path, metavar="DIR", help="score here, from this repository"
    )
    where.add_argument("--url", help="score on this running server (host:port, streaming gRPC)")
    p.add_argument(
        "--input",
        nargs="+",
        action="extend",
        required=True,
        metavar="PATH",
        help="input files or globs, read in the order given",
    )
    p.add_argument(
        "--output",
        type=Path,
        required=True,
        metavar="DIR",
        help="folder for the part-*.parquet, errors-*.parquet and manifest.json",
    )
    p.add_argument("--version", default="", help="model version (default: the served one)")
    p.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="COLUMN=INPUT",
        help="feed model input INPUT from column COLUMN (repeatable)",
    )
    p.add_argument(
        "--key",
        help="column copied unchanged to every output row "
        "(default: a 'row' column numbering the input rows)",
    )
    p.add_argument(
        "--model-output",
        action="append",
        default=[],
        metavar="NAME",
        help="write only these outputs, in this order (repeatable; default: all)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        metavar="N",
        default=0,
        help="rows per inference call (default: the model's max_batch_size)",
    )
    p.add_argument(
        "--part-rows",
        type=int,
        metavar="N",
        default=DEFAULT_PART_ROWS,
        help=f"rows per output part (default {DEFAULT_PART_ROWS})",
    )
    p.add_argument(
        "--max-error-fraction",
        type=float,
        metavar="F",
        default=0.0,
        help="bad rows allowed, as a fraction of all rows, before exit code 1 (default 0)",
    )
    p.add_argument("--summary", type=Path, metavar="FILE", help="write a JSON summary here")
    p.add_argument("--log-level", default="INFO")
    return p


def _column_map(pairs: Sequence[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for pair in pairs:
        column, sep, name = pair.partition("=")
        if not sep or not column or not name:
            raise ValueError(f"--map takes COLUMN=INPUT, not '{pair}'")
        found[column] = name
    return found


def _write_summary(path: Path | None, summary: dict[str, Any]) -> None:
    if path is not None:
        path.write_text(json.dumps(summary, indent=2) + "\n")


def main(argv: Sequence[str]) -> int:
    opts = parser().parse_args(argv)
    needed = ["inferd.server.batch.runner", "inferd.server.telemetry.logs"]
    if opts.model_repository is not None:  # scoring here loads the model, as `inferd serve` does
        needed.append("inferd.engines.onnx")
    missing = missing_module(*needed)
    if missing is not None:
        print(f"error: {needs_extra('batch', 'batch', missing)}", file=sys.stderr)
        return EXIT_USAGE
    from inferd.server.batch import BatchError, BatchJob, run_batch
    from inferd.server.telemetry.logs import setup_logging

    setup_logging(opts.log_level.upper(), "auto")
    try:
        job = BatchJob(
            opts.model,
            opts.input,
            opts.output,
            repository=opts.model_repository,
            url=opts.url,
            version=opts.version,
            column_map=_column_map(opts.map),
            key=opts.key,
            outputs=opts.model_output,
            batch_size=opts.batch_size,
            part_rows=opts.part_rows,
            max_error_fraction=opts.max_error_fraction,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        summary = asyncio.run(run_batch(job))
    except KeyboardInterrupt:
        print("error: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except BatchError as exc:
        _write_summary(opts.summary, {"exit_code": exc.exit_code, "message": str(exc)})
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    _write_summary(opts.summary, summary.to_json())
    if summary.message:
        print(f"error: {summary.message}", file=sys.stderr)
    return summary.exit_code
