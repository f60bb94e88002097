"""Columns to tensors: every Arrow layout of the same rows gives the same tensor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from inferd.server.batch.columns import convert
from inferd.server.model_io import ModelIO
from inferd.server.repository import ModelRepository


@pytest.fixture(scope="module")
def digits_io(demo_repository: Path) -> ModelIO:
    return ModelIO.from_config(ModelRepository(demo_repository).source("digits_mlp").config)


def layouts(pixels: np.ndarray) -> dict[str, pa.Array]:
    flat = pa.array(pixels.reshape(-1))
    fixed = pa.FixedSizeListArray.from_arrays(flat, 64)
    return {
        "fixed": fixed,
        "list": pa.array([r.tolist() for r in pixels], pa.list_(pa.float32())),
        "large_list_f64": pa.array([r.tolist() for r in pixels], pa.large_list(pa.float64())),
        "int_list": pa.array([r.astype(int).tolist() for r in pixels], pa.list_(pa.int64())),
        "json_text": pa.array([str(r.astype(int).tolist()) for r in pixels]),
    }


@pytest.mark.parametrize("layout", ["fixed", "list", "large_list_f64", "int_list", "json_text"])
def test_layouts_and_slices_give_the_same_rows(digits_io: ModelIO, layout: str) -> None:
    pixels = np.random.default_rng(0).integers(0, 17, size=(20, 64)).astype(np.float32)
    column = layouts(pixels)[layout]
    # A slice keeps an offset into its parent's buffers (as parts cut from a batch do).
    for start, stop in ((0, 20), (3, 11), (19, 20)):
        table = pa.table({"pixels": column}).slice(start, stop - start)
        converted = convert(table, digits_io, {})
        assert converted.reasons == {} and converted.good.all()
        got = converted.inputs["pixels"]
        assert got.dtype == np.float32 and got.shape == (stop - start, 64)
        assert np.array_equal(got, pixels[start:stop])


def test_null_rows_in_a_fixed_size_list_are_set_aside(digits_io: ModelIO) -> None:
    pixels = np.arange(3 * 64, dtype=np.float32).reshape(3, 64)
    mask = pa.array([False, True, False])
    column = pa.FixedSizeListArray.from_arrays(pa.array(pixels.reshape(-1)), 64, mask=mask)
    converted = convert(pa.table({"pixels": column}), digits_io, {})
    assert list(converted.reasons) == [1] and "missing value" in converted.reasons[1]
    assert np.array_equal(converted.inputs["pixels"], pixels[[0, 2]])
