"""Input files for ``inferd monitor reference``: numpy ``.npy`` / ``.npz``
and, with pyarrow installed, Parquet. Deliberately small: one function from
files to named arrays, so a fuller batch-file reader can replace it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


class InputFileError(ValueError):
    """An input file that cannot be read as the model's inputs."""


def read_inputs(files: Sequence[Path], input_names: Sequence[str]) -> dict[str, np.ndarray]:
    """The model's inputs from ``files``, rows of every file concatenated.
    ``.npy`` holds the only input; ``.npz`` and Parquet name each input (a
    Parquet column of lists is a 2-D input)."""
    parts: dict[str, list[np.ndarray]] = {name: [] for name in input_names}
    for path in files:
        for name, array in _read(path, input_names).items():
            parts[name].append(array)
    missing = [name for name, arrays in parts.items() if not arrays]
    if missing:
        raise InputFileError(f"no data for input(s) {', '.join(missing)}")
    inputs = {name: np.concatenate(arrays) for name, arrays in parts.items()}
    rows = {len(a) for a in inputs.values()}
    if len(rows) != 1:
        raise InputFileError(f"inputs have different row counts {sorted(rows)}")
    return inputs


def _read(path: Path, input_names: Sequence[str]) -> dict[str, np.ndarray]:
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            if len(input_names) != 1:
                raise InputFileError(
                    f"{path.name}: a .npy file holds one array; the model has inputs "
                    f"{', '.join(input_names)} (use .npz with one array per input)"
                )
            return {input_names[0]: np.load(path, allow_pickle=False)}
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                return {name: data[name] for name in input_names if name in data.files}
        if suffix in (".parquet", ".pq"):
            return _read_parquet(path, input_names)
    except (OSError, ValueError) as exc:
        if isinstance(exc, InputFileError):
            raise
        raise InputFileError(f"cannot read {path.name}: {exc}") from None
    raise InputFileError(f"{path.name}: unknown file type (use .npy, .npz or .parquet)")


def _read_parquet(path: Path, input_names: Sequence[str]) -> dict[str, np.ndarray]:
    try:
        import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]
    except ImportError:
        raise InputFileError("reading Parquet needs pyarrow (pip install pyarrow)") from None
    present = set(pq.read_schema(path).names)
    table = pq.read_table(path, columns=[n for n in input_names if n in present])
    # A column of lists becomes a 2-D array (one list per row).
    return {name: np.asarray(table.column(name).to_pylist()) for name in table.column_names}
