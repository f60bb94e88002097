"""Scored rows and set-aside rows to Parquet, each file complete or absent.

A part is written to a hidden temporary name and renamed once whole, so a
kill leaves either the finished file or a stray temporary (``clean`` removes
those), never half a part under a part's name.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

TMP_PREFIX = ".tmp-"
#: Output column of each row's position in the input (files in order), when no ``--key``.
ROW_COLUMN = "row"
REASON_COLUMN = "reason"


def output_column(array: np.ndarray) -> pa.Array:
    """One output over the rows: a scalar column, or fixed-size lists of each row's
    elements (row-major); values keep their dtype bit for bit."""
    rows = len(array)
    flat = array.reshape(rows, math.prod(array.shape[1:]))  # -1 fails on no rows
    if array.dtype == object:
        values = pa.array(flat.reshape(-1).tolist(), type=pa.binary())
    else:
        values = pa.array(np.ascontiguousarray(flat).reshape(-1))
    if flat.shape[1] == 1 and array.ndim <= 2:
        return values
    return pa.FixedSizeListArray.from_arrays(values, flat.shape[1])


def outputs_table(
    keys: pa.Array, key_name: str, outputs: Mapping[str, np.ndarray], order: Sequence[str]
) -> pa.Table:
    """The key column, then each output in ``order`` (arrays in the config's shape)."""
    columns: dict[str, pa.Array] = {key_name: keys}
    for name in order:
        columns[name] = output_column(outputs[name])
    return pa.table(columns)


def errors_table(keys: pa.Array, key_name: str, reasons: Sequence[str]) -> pa.Table:
    return pa.table({key_name: keys, REASON_COLUMN: pa.array(reasons, type=pa.string())})


def dictionary_columns(schema: pa.Schema) -> list[str]:
    """Parquet column paths worth dictionary-encoding: all but floating-point
    ones, whose values rarely repeat (the encoder would try, give up, and
    leave a larger file: about 7 us a row of a 256-float output)."""
    paths = []
    for field in schema:
        leaf, path = field.type, field.name
        if pa.types.is_list(leaf) or pa.types.is_fixed_size_list(leaf):
            leaf, path = leaf.value_type, f"{path}.list.element"
        if not pa.types.is_floating(leaf):
            paths.append(path)
    return paths


def write_atomic(table: pa.Table, path: Path) -> None:
    tmp = path.with_name(TMP_PREFIX + path.name)
    pq.write_table(table, tmp, use_dictionary=dictionary_columns(table.schema))
    os.replace(tmp, path)


def clean(folder: Path) -> None:
    """Remove temporaries a killed run left behind."""
    for stray in folder.glob(TMP_PREFIX + "*"):
        stray.unlink(missing_ok=True)
