"""Fixed bins per scalar feature: the shape every reference and window shares.

A tensor of ``rows`` rows is seen as a ``[rows, features]`` float matrix
(each element of a row one feature); tensors with more than ``MAX_FEATURES``
elements per row are pooled into one feature, so sketches stay small.
"""

from __future__ import annotations

import numpy as np

#: Bins per feature: deciles of the reference (PSI's usual choice).
BINS = 10
#: Above this many elements per row, all of a row's values form one feature.
MAX_FEATURES = 256


def feature_matrix(array: np.ndarray, rows: int) -> np.ndarray | None:
    """``array`` as float64 ``[values, features]``; None for tensors with no
    numeric distribution (BYTES, empty)."""
    if array.dtype.kind not in "biuf" or array.size == 0 or rows <= 0:
        return None
    matrix = array.reshape(rows, -1) if array.size % rows == 0 else array.reshape(1, -1)
    if matrix.shape[1] > MAX_FEATURES:
        matrix = matrix.reshape(-1, 1)
    return matrix.astype(np.float64, copy=False)


def quantile_edges(values: np.ndarray) -> np.ndarray:
    """Interior edges ``[features, BINS - 1]`` at the deciles of ``values``
    (NaN ignored; an all-NaN feature gets zeros)."""
    qs = np.linspace(0, 1, BINS + 1)[1:-1]
    with np.errstate(all="ignore"):
        finite = np.where(np.isfinite(values), values, np.nan)
        if np.isnan(finite).all(axis=0).any():
            finite = np.where(np.isnan(finite).all(axis=0), 0.0, finite)
        edges = np.nanquantile(finite, qs, axis=0).T
    return np.ascontiguousarray(edges, np.float64)


def histogram(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts ``[features, BINS]`` of ``values`` ``[n, features]`` over each
    feature's own edges; NaN is left out (the reference counts it as null)."""
    features = edges.shape[0]
    if values.shape[1] != features:
        raise ValueError(f"{values.shape[1]} features, the reference has {features}")
    # Bin index: how many of the feature's edges lie below the value.
    index = (values[:, :, None] > edges[None, :, :]).sum(axis=2)
    index += np.arange(features) * BINS
    valid = ~np.isnan(values)
    counts = np.bincount(index[valid], minlength=features * BINS)
    return counts.reshape(features, BINS).astype(np.float64)


def class_counts(values: np.ndarray, classes: int) -> np.ndarray:
    """Rows per predicted class (argmax of each row of scores) ``[1, classes]``."""
    rows = values[~np.isnan(values).any(axis=1)]
    return np.bincount(rows.argmax(axis=1), minlength=classes)[None, :classes].astype(np.float64)
