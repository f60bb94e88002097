"""clients.request_data: inputs for any model from its metadata or a file."""

from __future__ import annotations

from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from inferd.clients.request_data import (
    InputDataError,
    load_inputs,
    parse_shape_overrides,
    synthetic_inputs,
)

METADATA = {
    "inputs": [
        {"name": "f16", "datatype": "FP16", "shape": [-1, 3]},
        {"name": "bf16", "datatype": "BF16", "shape": [-1, 2]},
        {"name": "ids", "datatype": "INT64", "shape": [-1, -1]},
        {"name": "flag", "datatype": "BOOL", "shape": [-1, 1]},
        {"name": "tag", "datatype": "BYTES", "shape": [-1, 1]},
    ]
}


def test_every_datatype_and_the_batch_rows() -> None:
    inputs = synthetic_inputs(METADATA, max_batch_size=8, rows=4, shapes={"ids": [5]})
    assert {k: (v.shape, v.dtype) for k, v in inputs.items()} == {
        "f16": ((4, 3), np.dtype(np.float16)),
        "bf16": ((4, 2), np.dtype(ml_dtypes.bfloat16)),
        "ids": ((4, 5), np.dtype(np.int64)),
        "flag": ((4, 1), np.dtype(np.bool_)),
        "tag": ((4, 1), np.dtype(object)),
    }
    assert all(isinstance(x, bytes) for x in inputs["tag"].flat)
    assert inputs["ids"].min() >= 0 and inputs["ids"].max() < 8  # index-like values stay small


def test_variable_dims_default_to_one_and_same_seed_same_data() -> None:
    a = synthetic_inputs(METADATA, max_batch_size=8)
    assert a["ids"].shape == (1, 1)
    b = synthetic_inputs(METADATA, max_batch_size=8)
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_without_batching_every_dim_is_the_models() -> None:
    metadata = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, -1]}]}
    inputs = synthetic_inputs(metadata, max_batch_size=0, rows=99, shapes={"x": [2, 7]})
    assert inputs["x"].shape == (2, 7)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rows": 9}, "rows 9 is outside 1..8"),
        ({"shapes": {"nope": [1]}}, "--shape names ['nope']"),
        ({"shapes": {"f16": [4]}}, "input 'f16': dim 0 is fixed at 3, --shape gives 4"),
        ({"shapes": {"ids": [2, 2]}}, "input 'ids': --shape gives 2 dims, the model has 1"),
    ],
)
def test_inputs_that_cannot_be_built_say_why(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InputDataError, match=message.replace("[", r"\[").replace("]", r"\]")):
        synthetic_inputs(METADATA, max_batch_size=8, **kwargs)  # type: ignore[arg-type]


def test_unknown_datatype() -> None:
    metadata = {"inputs": [{"name": "x", "datatype": "COMPLEX", "shape": [1]}]}
    with pytest.raises(InputDataError, match="'COMPLEX' is not one the protocol defines"):
        synthetic_inputs(metadata, max_batch_size=0)


@pytest.mark.parametrize(
    ("items", "expected"), [(["a=1,2"], {"a": [1, 2]}), (["a=3", "b=4"], {"a": [3], "b": [4]})]
)
def test_shape_overrides(items: list[str], expected: dict[str, list[int]]) -> None:
    assert parse_shape_overrides(items) == expected


@pytest.mark.parametrize("item", ["a", "=3", "a=", "a=x", "a=0", "a=2,-1"])
def test_bad_shape_overrides(item: str) -> None:
    with pytest.raises(InputDataError, match="expected NAME=D1,D2"):
        parse_shape_overrides([item])


ONE = {"inputs": [{"name": "x", "datatype": "FP16", "shape": [-1, 2]}]}
TWO = {"inputs": [*ONE["inputs"], {"name": "s", "datatype": "BYTES", "shape": [-1, 1]}]}


def test_npz_npy_and_json_files(tmp_path: Path) -> None:
    np.savez(tmp_path / "in.npz", x=np.ones((3, 2), np.float16), s=np.array([[b"a"]] * 3))
    assert load_inputs(tmp_path / "in.npz", TWO)["x"].shape == (3, 2)
    np.save(tmp_path / "in.npy", np.zeros((2, 2), np.float16))
    assert load_inputs(tmp_path / "in.npy", ONE)["x"].shape == (2, 2)
    (tmp_path / "in.json").write_text('{"x": [[1, 2]], "s": [["hi"]]}')
    loaded = load_inputs(tmp_path / "in.json", TWO)
    assert loaded["x"].dtype == np.float16  # typed by the metadata
    assert loaded["s"].tolist() == [[b"hi"]]


@pytest.mark.parametrize(
    ("name", "content", "metadata", "message"),
    [
        ("in.npy", None, TWO, "a .npy file feeds a model with one input"),
        ("in.json", '{"x": [[1, 2]]}', TWO, r"inputs missing \['s'\]"),
        ("in.json", '{"x": [[1, 2]], "y": [1]}', ONE, r"not the model's \['y'\]"),
        ("in.json", "[1, 2]", ONE, "expected an object mapping input names"),
        ("in.json", "{nope", ONE, "Expecting property name"),
        ("in.csv", "x\n1", ONE, "expected a .npz, .npy or .json file"),
        ("absent.npz", None, ONE, "No such file or directory"),
    ],
)
def test_files_that_cannot_feed_the_model_are_named(
    tmp_path: Path, name: str, content: str | None, metadata: dict[str, object], message: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    elif name.endswith(".npy"):
        np.save(path, np.zeros((1, 2), np.float16))
    with pytest.raises(InputDataError, match=message) as info:
        load_inputs(path, metadata)
    assert str(path) in str(info.value)
