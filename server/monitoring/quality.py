"""Input quality of sampled rows: NaN, infinity, empty BYTES and values
outside the reference's range, counted as rows with at least one such value."""

from __future__ import annotations

import numpy as np

from inferd.server.monitoring.bins import feature_matrix
from inferd.server.monitoring.reference import TensorReference

PROBLEMS = ("nan", "inf", "empty", "out_of_range")


def bad_rows(array: np.ndarray, rows: int, reference: TensorReference | None) -> dict[str, int]:
    """Rows of ``array`` with each problem (only the problems found)."""
    found: dict[str, int] = {}
    if rows <= 0 or array.size == 0:
        return found
    if array.dtype.kind in "OSU":
        flat = array.reshape(rows, -1) if array.size % rows == 0 else array.reshape(1, -1)
        lengths = np.vectorize(len, otypes=[np.int64])(flat)
        empty = int((lengths == 0).any(axis=1).sum())
        if empty:
            found["empty"] = empty
        return found
    if array.dtype.kind == "f":
        flat = array.reshape(rows, -1) if array.size % rows == 0 else array.reshape(1, -1)
        if n := int(np.isnan(flat).any(axis=1).sum()):
            found["nan"] = n
        if n := int(np.isinf(flat).any(axis=1).sum()):
            found["inf"] = n
    if reference is not None:
        matrix = feature_matrix(array, rows)
        if matrix is not None and matrix.shape[1] == reference.features:
            with np.errstate(invalid="ignore"):
                outside = (matrix < reference.minimum) | (matrix > reference.maximum)
            per_row = outside.reshape(rows, -1).any(axis=1)
            if n := int(per_row.sum()):
                found["out_of_range"] = n
    return found
