"""Arrow columns to model input tensors, row by row checked against the signature.

A row that does not fit (its column is missing, a value is null, of the
wrong type or length, or NaN where the model refuses it) is set aside with
its reason; the rest are scored. Whole columns convert in a few vectorized
steps; only a column that needs it (strings holding numbers, nested lists,
null elements) is converted one row at a time.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from inferd.protos.datatypes import NUMPY_DTYPES
from inferd.server.model_io import ModelIO, TensorInfo
from inferd.server.reshape import to_model

#: config.pbtxt parameter: comma-separated inputs in which NaN is refused ("*": every input).
REJECT_NAN_PARAM = "reject_nan"


@dataclass
class Converted:
    """One part's rows as model inputs: ``good`` marks the rows that fit, and
    ``inputs`` holds those rows only; ``reasons`` says why each other row did not."""

    inputs: dict[str, np.ndarray]
    good: np.ndarray
    reasons: dict[int, str]


def row_elements(info: TensorInfo) -> tuple[tuple[int, ...], int | None]:
    """The config's dims of one row and how many elements a row holds (None: variable)."""
    dims = info.shape[1:]
    if all(d > 0 for d in dims):
        return dims, math.prod(dims)
    return dims, None


def _row_shape(dims: tuple[int, ...], count: int) -> tuple[int, ...] | None:
    """``dims`` with its one -1 filled in for ``count`` elements; None if it does not fit."""
    known = math.prod(d for d in dims if d > 0)
    if sum(1 for d in dims if d < 0) != 1 or known == 0 or count % known:
        return None
    return tuple(count // known if d < 0 else d for d in dims)


class _Column:
    """One input's values over a part's rows: ``values[i]`` is row i, flat."""

    def __init__(self, info: TensorInfo, rows: int, reject_nan: bool) -> None:
        self.info = info
        self.dtype = NUMPY_DTYPES[info.datatype]
        self.dims, self.count = row_elements(info)
        self.rows = rows
        self.reject_nan = reject_nan and self.dtype.kind == "f"
        self.reasons: dict[int, str] = {}

    def bad(self, row: int, reason: str) -> None:
        self.reasons.setdefault(row, f"input '{self.info.name}': {reason}")

    def convert(self, column: pa.ChunkedArray | None, name: str) -> np.ndarray:
        """Rows in the config's shape (``rows x dims``); rows set aside hold zeros."""
        if column is None:
            for row in range(self.rows):
                self.bad(row, f"no column '{name}' in the input")
            return np.zeros((self.rows, *(max(d, 1) for d in self.dims)), self.dtype)
        array = one_array(column)
        flat = self._vectorized(array)
        if flat is None:
            flat = self._row_by_row(array)
        if self.reject_nan:
            nan_rows = np.flatnonzero(np.isnan(flat.reshape(self.rows, -1)).any(axis=1))
            for nan_row in nan_rows:
                self.bad(int(nan_row), "NaN is not allowed here (config parameter reject_nan)")
        return flat

    # -- fast paths --------------------------------------------------------------------------

    def _vectorized(self, array: pa.Array) -> np.ndarray | None:
        kind = array.type
        if pa.types.is_fixed_size_list(kind):
            whole = self._whole_rows(array)
            if whole is not None:
                return whole
            array = array.cast(pa.list_(kind.value_type))
            kind = array.type
        if pa.types.is_list(kind) or pa.types.is_large_list(kind):
            return self._from_lists(array)
        if self.count != 1:
            return None
        if self.dtype.kind == "O":
            if not (pa.types.is_string(kind) or pa.types.is_binary(kind)):
                return None
            texts = np.empty(self.rows, dtype=object)
            texts[:] = [
                v if isinstance(v, bytes) else (v or "").encode() for v in array.to_pylist()
            ]
            self._nulls(array)
            return texts.reshape(self.rows, *self.dims)
        if not (
            pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)
        ):
            return None
        self._nulls(array)
        values: np.ndarray = pc.fill_null(array, 0).to_numpy(zero_copy_only=False)
        self._check_integral(values, np.arange(self.rows))
        return values.astype(self.dtype, copy=False).reshape(self.rows, *self.dims)

    def _nulls(self, array: pa.Array) -> None:
        if array.null_count:
            for row in np.flatnonzero(array.is_null().to_numpy(zero_copy_only=False)):
                self.bad(int(row), "missing value")

    def _check_integral(self, values: np.ndarray, rows: np.ndarray) -> None:
        """Fractional values cannot feed an integer input: those rows are the wrong type."""
        if self.dtype.kind in "iub" and values.dtype.kind == "f":
            frac = values.reshape(len(rows), -1)
            wrong = ~np.isfinite(frac).all(axis=1) | (frac != np.round(frac)).any(axis=1)
            for row in rows[wrong]:
                self.bad(int(row), f"value is not a whole number ({self.info.datatype} input)")

    def _whole_rows(self, array: pa.FixedSizeListArray) -> np.ndarray | None:
        """The common case, with no copy: fixed-size rows of the input's size, no nulls."""
        size, child = array.type.list_size, array.type.value_type
        if array.null_count or size != self.count or self.dtype.kind == "O":
            return None
        if not (pa.types.is_integer(child) or pa.types.is_floating(child)):
            return None
        values = array.values.slice(array.offset * size, len(array) * size)
        if values.null_count:
            return None
        flat = as_numpy(values).reshape(self.rows, size)
        self._check_integral(flat, np.arange(self.rows))
        return flat.astype(self.dtype, copy=False).reshape(self.rows, *self.dims)

    def _from_lists(self, array: pa.ListArray) -> np.ndarray | None:
        child = array.type.value_type
        numeric = pa.types.is_integer(child) or pa.types.is_floating(child)
        if self.dtype.kind == "O" or not numeric:
            return None
        values = array.values
        if values.null_count:
            return None
        offsets = as_numpy(array.offsets)
        lengths = np.diff(offsets)
        nulls = array.is_null().to_numpy(zero_copy_only=False)
        count = self.count
        if count is None:
            firsts = lengths[~nulls]
            count = int(firsts[0]) if len(firsts) else 1
        shape = self.dims if self.count is not None else _row_shape(self.dims, count)
        if shape is None:
            return None
        for row in np.flatnonzero(nulls):
            self.bad(int(row), "missing value")
        for row in np.flatnonzero(~nulls & (lengths != count)):
            self.bad(int(row), f"{lengths[row]} values, the input takes {count} per row")
        good = ~nulls & (lengths == count)
        flat = as_numpy(values)
        out = np.zeros((self.rows, count), dtype=flat.dtype)
        index = offsets[:-1][good, None] + np.arange(count)
        out[good] = flat[index]
        self._check_integral(out[good], np.flatnonzero(good))
        return out.astype(self.dtype, copy=False).reshape(self.rows, *shape)

    # -- one row at a time -------------------------------------------------------------------

    def _row_by_row(self, array: pa.Array) -> np.ndarray:
        rows: list[np.ndarray | None] = [
            self._one(row, v) for row, v in enumerate(array.to_pylist())
        ]
        first = next((r for r in rows if r is not None), None)
        size = self.count or (first.size if first is not None else 1)
        shape = self.dims if self.count is not None else _row_shape(self.dims, size) or (size,)
        out = np.zeros((self.rows, size), dtype=self.dtype)
        for row, value in enumerate(rows):
            if value is None:
                continue
            if value.size != size:
                self.bad(row, f"{value.size} values, the input takes {size} per row")
            else:
                out[row] = value.reshape(-1)
        return out.reshape(self.rows, *shape)

    def _one(self, row: int, value: object) -> np.ndarray | None:
        if value is None:
            self.bad(row, "missing value")
            return None
        if self.dtype.kind == "O":
            items = value if isinstance(value, list) else [value]
            if not all(isinstance(v, (str, bytes)) for v in items):
                self.bad(row, "expected text or bytes")
                return None
            return np.array([v.encode() if isinstance(v, str) else v for v in items], dtype=object)
        if isinstance(value, str):
            text = value
            try:
                value = json.loads(text)
            except ValueError:
                value = text
            if isinstance(value, str):
                self.bad(row, f"{value[:40]!r} is not a number")
                return None
        try:
            parsed = np.asarray(value)
        except ValueError:
            self.bad(row, "ragged nested values")
            return None
        if parsed.dtype.kind not in "biuf" or (parsed.dtype.kind == "b" and self.dtype.kind != "b"):
            self.bad(row, f"wrong type for a {self.info.datatype} input")
            return None
        whole = parsed.dtype.kind != "f" or (
            np.isfinite(parsed).all() and (parsed == np.round(parsed)).all()
        )
        if self.dtype.kind in "iu" and not whole:
            self.bad(row, f"value is not a whole number ({self.info.datatype} input)")
            return None
        try:
            with np.errstate(over="raise", invalid="raise"):
                return parsed.astype(self.dtype).reshape(-1)
        except (OverflowError, FloatingPointError):
            self.bad(row, f"value out of range for {self.info.datatype}")
            return None


def as_numpy(array: pa.Array) -> np.ndarray:
    """A view of a numeric array without nulls. Read from its buffer: the first
    ``to_numpy`` imports pandas where it is installed (half a second)."""
    kind = array.type
    if array.null_count == 0 and (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
        dtype = np.dtype(kind.to_pandas_dtype())
        data = array.buffers()[1]
        return np.frombuffer(
            data, dtype=dtype, count=len(array), offset=array.offset * dtype.itemsize
        )
    result: np.ndarray = array.to_numpy(zero_copy_only=False)
    return result


def one_array(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    """The column as one array; a single chunk as it is (combining copies)."""
    if not isinstance(column, pa.ChunkedArray):
        return column
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


def reject_nan_inputs(parameters: Mapping[str, str], io: ModelIO) -> frozenset[str]:
    """The inputs in which the model's config parameter ``reject_nan`` refuses NaN."""
    text = parameters.get(REJECT_NAN_PARAM, "")
    names = {n.strip() for n in text.split(",") if n.strip()}
    return frozenset(io.inputs) if "*" in names else frozenset(names)


def convert(
    table: pa.Table,
    io: ModelIO,
    column_for: Mapping[str, str],
    reject_nan: frozenset[str] = frozenset(),
) -> Converted:
    """``table``'s rows as inputs of ``io`` (``column_for``: input -> column name)."""
    rows = table.num_rows
    arrays: dict[str, np.ndarray] = {}
    reasons: dict[int, str] = {}
    for name, info in io.inputs.items():
        column_name = column_for.get(name, name)
        present = column_name in table.column_names
        if not present and info.optional:
            continue
        column = _Column(info, rows, name in reject_nan)
        arrays[name] = column.convert(table.column(column_name) if present else None, column_name)
        for row, reason in column.reasons.items():
            reasons[row] = f"{reasons[row]}; {reason}" if row in reasons else reason
    good = np.ones(rows, dtype=bool)
    if reasons:
        good[list(reasons)] = False
    inputs = {
        name: to_model(array if good.all() else array[good], io.inputs[name], io.batched)
        for name, array in arrays.items()
    }
    return Converted(inputs, good, reasons)
