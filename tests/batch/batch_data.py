"""Input files for the batch tests: the same digits rows in every format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def digits_rows(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Keys (strings, to show they are carried, not renumbered) and 8x8 pixels 0..16."""
    rng = np.random.default_rng(seed)
    keys = np.array([f"k{seed}-{i:05d}" for i in range(count)])
    return keys, rng.integers(0, 17, size=(count, 64)).astype(np.float32)


def pixels_column(pixels: np.ndarray) -> pa.Array:
    return pa.FixedSizeListArray.from_arrays(pa.array(pixels.reshape(-1)), pixels.shape[1])


def write_parquet(path: Path, keys: np.ndarray, pixels: np.ndarray, column: str = "pixels") -> Path:
    pq.write_table(pa.table({"id": keys, column: pixels_column(pixels)}), path, row_group_size=97)
    return path


def write_jsonl(path: Path, keys: np.ndarray, pixels: np.ndarray) -> Path:
    with path.open("w") as f:
        for key, row in zip(keys, pixels, strict=True):
            f.write(json.dumps({"id": str(key), "pixels": row.tolist()}) + "\n")
    return path


def write_csv(path: Path, keys: np.ndarray, pixels: np.ndarray) -> Path:
    """Pixels as a JSON array in one CSV field (CSV has no list type)."""
    with path.open("w") as f:
        f.write("id,pixels\n")
        for key, row in zip(keys, pixels, strict=True):
            f.write(f'{key},"{json.dumps(row.tolist())}"\n')
    return path
