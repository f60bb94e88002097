"""Input files to Arrow tables of ``part_rows`` rows each.

Formats by suffix: Parquet (``.parquet``, ``.pq``), CSV (``.csv``), JSON
Lines (``.jsonl``, ``.ndjson``, ``.json``), NumPy (``.npy``: one column,
named ``npy_column``; ``.npz``: a column per array). Parquet and ``.npy``
are read part by part; CSV, JSON Lines and ``.npz`` whole. A part is the
rows ``[k * part_rows, (k + 1) * part_rows)`` of its file, so a re-run cuts
the same parts.
"""

from __future__ import annotations

import glob
import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from inferd.server.batch.errors import BatchError, InputFileError

SUFFIXES = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".npy": "npy",
    ".npz": "npz",
}


@dataclass(frozen=True)
class InputFile:
    path: Path
    size_bytes: int
    sha256: str

    @property
    def format(self) -> str:
        return SUFFIXES[self.path.suffix.lower()]


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def expand(patterns: Sequence[str]) -> list[Path]:
    """Paths and globs to files, each glob's matches sorted; a pattern matching nothing fails."""
    found: list[Path] = []
    for pattern in patterns:
        if glob.has_magic(pattern):
            matches = sorted(Path(p) for p in glob.glob(pattern, recursive=True))
            if not matches:
                raise InputFileError(f"no input file matches '{pattern}'")
            found.extend(matches)
        else:
            found.append(Path(pattern))
    for path in found:
        if path.suffix.lower() not in SUFFIXES:
            raise BatchError(
                f"input file {path}: unknown format '{path.suffix}' "
                f"(expected one of {', '.join(sorted(SUFFIXES))})"
            )
    return found


def describe(path: Path) -> InputFile:
    """Size and SHA-256 (for the manifest, and to know a re-run reads the same data)."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
        return InputFile(path, path.stat().st_size, digest.hexdigest())
    except OSError as exc:
        raise InputFileError(f"cannot read input file {path}: {exc.strerror or exc}") from None


def _numpy_column(array: np.ndarray) -> pa.Array:
    """A column of ``array``'s rows: scalars, or fixed-size lists of each row's elements."""
    if array.ndim == 1:
        return pa.array(array)
    flat = np.ascontiguousarray(array).reshape(len(array), -1)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), flat.shape[1])


def _npz_table(path: Path) -> pa.Table:
    with np.load(path, allow_pickle=False) as data:
        columns = {name: data[name] for name in data.files}
    lengths = {len(a) for a in columns.values()}
    if len(lengths) > 1:
        raise ValueError(f"arrays have different lengths {sorted(lengths)}")
    return pa.table({name: _numpy_column(a) for name, a in columns.items()})


def _batches(source: InputFile, part_rows: int, npy_column: str) -> Iterator[pa.Table]:
    path, fmt = source.path, source.format
    if fmt == "parquet":
        parquet = pq.ParquetFile(path)
        # One decoding thread: this already is the reader thread, beside the engine's.
        for batch in parquet.iter_batches(batch_size=part_rows, use_threads=False):
            yield pa.Table.from_batches([batch])
    elif fmt == "npy":
        array = np.load(path, mmap_mode="r", allow_pickle=False)
        if array.ndim == 0:
            raise ValueError("a 0-dimensional array has no rows")
        for start in range(0, len(array), part_rows):
            yield pa.table(
                {npy_column: _numpy_column(np.asarray(array[start : start + part_rows]))}
            )
    elif fmt == "npz":
        yield _npz_table(path)
    elif fmt == "csv":
        # An empty cell is a missing value, in text columns too.
        yield pa_csv.read_csv(path, convert_options=pa_csv.ConvertOptions(strings_can_be_null=True))
    else:
        yield _jsonl_table(path)


def _jsonl_table(path: Path) -> pa.Table:
    """JSON Lines; a column whose rows disagree on a type (a bad row) is kept
    as each value's JSON text, so that row is set aside, not the whole file."""
    try:
        return pa_json.read_json(path)
    except pa.ArrowInvalid:
        pass
    rows = []
    with path.open() as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError as exc:
                    raise ValueError(f"line {number} is not JSON ({exc})") from None
    names = list(dict.fromkeys(k for row in rows if isinstance(row, dict) for k in row))
    columns = {}
    for name in names:
        values = [row.get(name) if isinstance(row, dict) else None for row in rows]
        try:
            columns[name] = pa.array(values)
        except (pa.ArrowException, TypeError, ValueError):
            columns[name] = pa.array(
                [None if v is None else json.dumps(v) for v in values], pa.string()
            )
    return pa.table(columns) if columns else pa.table({"": pa.nulls(len(rows))})


def read_parts(source: InputFile, part_rows: int, npy_column: str) -> Iterator[pa.Table]:
    """The file's parts in order, each exactly ``part_rows`` rows but the last."""
    pending: list[pa.Table] = []
    held = 0
    batches = _batches(source, part_rows, npy_column)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            break
        except (OSError, ValueError, pa.ArrowException) as exc:
            raise InputFileError(
                f"cannot read input file {source.path}: {_one_line(exc)}"
            ) from None
        pending.append(batch)
        held += batch.num_rows
        while held >= part_rows:
            table = pa.concat_tables(pending) if len(pending) > 1 else pending[0]
            yield table.slice(0, part_rows)
            rest = table.slice(part_rows)
            pending, held = ([rest] if rest.num_rows else []), rest.num_rows
    if held:
        yield pa.concat_tables(pending) if len(pending) > 1 else pending[0]
