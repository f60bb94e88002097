"""Triton's classification extension: an output requested with
``classification: K`` answers, per batch row, its K largest entries as
BYTES ``"value:index"``, or ``"value:index:label"`` when the output's
``label_filename`` has a label for that index.

As Triton does it (server ``src/classification.cc`` and the gRPC handler):

- the shape is ``[batch, min(K, row elements)]`` for a batching model and
  ``[min(K, elements)]`` otherwise: a K above the class count answers every
  class, not an error; the index is the flat position within the row;
- values are formatted as C++ ``std::to_string`` does: ``%f`` (six
  decimals) for FP32/FP64, the plain integer for integer types;
- only integer, FP32 and FP64 outputs qualify (FP16, BF16, BOOL and BYTES are
  refused), and a row of more than a million elements is refused;
- an empty label, or an index past the end of the labels, adds no label.

Ties: Triton sorts with ``std::sort`` on ``>``, which keeps equal values in
index order for rows of up to 16 entries (libstdc++ sorts those by
insertion) and leaves larger rows' ties in no defined order; here ties are
always in index order, which agrees wherever Triton's order is defined.
"""

from __future__ import annotations

import numpy as np

from inferd.server.errors import InvalidArgument
from inferd.server.model_io import TensorInfo
from inferd.server.reshape import to_config

#: Output datatypes Triton classifies (its ``TopkClassifications`` switch).
CLASSIFIABLE = frozenset(
    ("UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP32", "FP64")
)
#: Most elements in one row Triton classifies.
MAX_ROW_ELEMENTS = 1_000_000


def check_classifiable(info: TensorInfo) -> None:
    """Refuse, before the model runs, an output that has no class results."""
    if info.datatype not in CLASSIFIABLE:
        raise InvalidArgument(
            f"output '{info.name}': class result not available for output due to "
            f"unsupported type '{info.datatype}' (classification needs an integer, FP32 "
            "or FP64 output)"
        )


def _top(row: np.ndarray, count: int) -> np.ndarray:
    """Indices of the ``count`` largest entries, largest first, ties in index order."""
    # A stable ascending sort of the reversed row, read backwards: descending,
    # and equal values keep their original index order.
    last = row.shape[0] - 1
    order: np.ndarray = last - np.argsort(row[::-1], kind="stable")[::-1]
    return order[:count]


def _format(value: np.generic) -> str:
    if isinstance(value, np.floating):
        return f"{float(value):f}"
    return str(int(value))


def classify(array: np.ndarray, info: TensorInfo, count: int, batched: bool) -> np.ndarray:
    """The top ``count`` classes of ``array`` (an output in its config shape)
    per batch row, as an object array of ``bytes``."""
    check_classifiable(info)
    with_batch = batched and array.ndim > 0
    rows = array.reshape(array.shape[0] if with_batch else 1, -1)
    if rows.shape[1] > MAX_ROW_ELEMENTS:
        raise InvalidArgument(
            f"output '{info.name}': classification output tensor too large "
            f"({rows.shape[1]} elements per row, at most {MAX_ROW_ELEMENTS})"
        )
    width = min(count, rows.shape[1])
    labels = info.labels
    out = np.empty((rows.shape[0], width), dtype=object)
    for r, row in enumerate(rows):
        for k, index in enumerate(_top(row, width)):
            text = f"{_format(row[index])}:{index}"
            label = labels[index] if index < len(labels) else ""
            if label:
                text += f":{label}"
            out[r, k] = text.encode("utf-8")
    return out if with_batch else out.reshape(width)


def answer_output(
    array: np.ndarray, info: TensorInfo, batched: bool, class_count: int | None
) -> tuple[str, np.ndarray]:
    """An output as the caller receives it, for every front end: the config's
    shape (server.reshape), or its top ``class_count`` classes as BYTES."""
    array = to_config(array, info, batched)
    if class_count is None:
        return info.datatype, array
    return "BYTES", classify(array, info, class_count, batched)
