"""Distances between a reference's bin shares and a window's bin counts."""

from __future__ import annotations

import numpy as np

#: Floor on a bin's share, so an empty bin on one side gives a finite PSI.
SHARE_FLOOR = 1e-4


def shares(counts: np.ndarray) -> np.ndarray:
    """Counts ``[features, bins]`` as shares per feature (a feature with no
    count gets equal shares)."""
    total = counts.sum(axis=1, keepdims=True)
    bins = counts.shape[1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, counts / np.where(total > 0, total, 1), 1.0 / bins)


def psi(reference: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Population stability index per feature: sum of (q - p) ln(q / p)."""
    p = np.maximum(reference, SHARE_FLOOR)
    q = np.maximum(window, SHARE_FLOOR)
    return np.asarray(((q - p) * np.log(q / p)).sum(axis=1))


def js_distance(reference: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Jensen-Shannon distance per feature (base 2: 0 same, 1 disjoint)."""
    p = reference / np.maximum(reference.sum(axis=1, keepdims=True), 1e-12)
    q = window / np.maximum(window.sum(axis=1, keepdims=True), 1e-12)
    m = (p + q) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_p = np.where(p > 0, p * np.log2(p / m), 0.0).sum(axis=1)
        kl_q = np.where(q > 0, q * np.log2(q / m), 0.0).sum(axis=1)
    return np.asarray(np.sqrt(np.clip((kl_p + kl_q) / 2, 0.0, 1.0)))
