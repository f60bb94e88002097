"""Reference distributions: what a model version's inputs and outputs looked
like when it was known good (format: docs/monitoring.md#reference-format).

Written by ``inferd monitor reference`` to ``<model>/monitoring/reference.json``,
or captured by the server from a version's first sampled answers.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from inferd.server.monitoring.bins import class_counts, feature_matrix, histogram, quantile_edges
from inferd.server.monitoring.drift import shares

FORMAT = "inferd.monitoring.reference"
FORMAT_VERSION = 1
#: Where a model's reference lives, relative to its directory in the repository.
REFERENCE_PATH = Path("monitoring") / "reference.json"
#: Outputs with up to this many scores per row also get a predicted-class histogram.
MAX_CLASSES = 1000


class ReferenceError(ValueError):
    """A reference file that cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class TensorReference:
    name: str
    role: str  # "input" or "output"
    #: Interior bin edges ``[features, BINS - 1]`` and bin shares ``[features, BINS]``.
    edges: np.ndarray
    shares: np.ndarray
    minimum: np.ndarray
    maximum: np.ndarray
    null_share: np.ndarray
    #: Share of rows per predicted class (classifier outputs), else None.
    classes: np.ndarray | None = None

    @property
    def features(self) -> int:
        return int(self.edges.shape[0])


@dataclass(frozen=True, slots=True)
class Reference:
    model: str
    rows: int
    source: str
    tensors: dict[str, TensorReference]
    created: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model": self.model,
            "source": self.source,
            "created": self.created,
            "rows": self.rows,
            "tensors": [_tensor_json(t) for t in self.tensors.values()],
        }

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=1) + "\n")
        tmp.replace(path)


def is_classifier(role: str, array: np.ndarray, matrix: np.ndarray) -> bool:
    """Scores per class: a float output of 2..MAX_CLASSES values per row."""
    return role == "output" and array.dtype.kind == "f" and 2 <= matrix.shape[1] <= MAX_CLASSES


def build_matrices(
    inputs: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray], rows: int
) -> dict[str, tuple[np.ndarray, bool]]:
    """Each numeric tensor as ``[values, features]`` (key ``role:name``) and
    whether it holds class scores."""
    found: dict[str, tuple[np.ndarray, bool]] = {}
    for role, arrays in (("input", inputs), ("output", outputs)):
        for name, array in arrays.items():
            matrix = feature_matrix(array, rows)
            if matrix is not None:
                found[f"{role}:{name}"] = (matrix, is_classifier(role, array, matrix))
    return found


def build_tensor(key: str, matrix: np.ndarray, classifier: bool) -> TensorReference:
    """The reference of one tensor from its ``[values, features]`` matrix."""
    role, name = key.split(":", 1)
    finite = np.where(np.isfinite(matrix), matrix, np.nan)
    present = ~np.isnan(finite)
    with np.errstate(all="ignore"):
        minimum = np.where(present.any(0), np.where(present, finite, np.inf).min(0), np.nan)
        maximum = np.where(present.any(0), np.where(present, finite, -np.inf).max(0), np.nan)
    edges = quantile_edges(finite)
    classes = shares(class_counts(finite, matrix.shape[1]))[0] if classifier else None
    return TensorReference(
        name=name,
        role=role,
        edges=edges,
        shares=shares(histogram(finite, edges)),
        minimum=minimum,
        maximum=maximum,
        null_share=1.0 - present.mean(axis=0),
        classes=classes,
    )


def from_matrices(
    model: str, matrices: Mapping[str, tuple[np.ndarray, bool]], rows: int, source: str
) -> Reference:
    tensors = {key: build_tensor(key, m, classifier) for key, (m, classifier) in matrices.items()}
    return Reference(model, rows, source, tensors, created=time.time())


def build(
    model: str,
    inputs: Mapping[str, np.ndarray],
    outputs: Mapping[str, np.ndarray],
    rows: int,
    source: str,
) -> Reference:
    return from_matrices(model, build_matrices(inputs, outputs, rows), rows, source)


def _floats(values: np.ndarray) -> list[Any]:
    """JSON has no NaN or infinity: those become null."""
    return [
        _floats(v) if isinstance(v, np.ndarray) else (float(v) if math.isfinite(v) else None)
        for v in values
    ]


def _tensor_json(t: TensorReference) -> dict[str, Any]:
    return {
        "name": t.name,
        "role": t.role,
        "features": t.features,
        "edges": _floats(t.edges),
        "shares": _floats(t.shares),
        "min": _floats(t.minimum),
        "max": _floats(t.maximum),
        "null_share": _floats(t.null_share),
        "class_shares": None if t.classes is None else _floats(t.classes),
    }


def _array(data: dict[str, Any], key: str, shape: tuple[int, ...]) -> np.ndarray:
    try:
        array = np.array(data[key], dtype=np.float64)  # null -> nan
    except (KeyError, TypeError, ValueError) as exc:
        raise ReferenceError(f"tensor field '{key}' is missing or not numbers") from exc
    if array.shape != shape:
        raise ReferenceError(f"tensor field '{key}' has shape {array.shape}, expected {shape}")
    return array


def parse(data: Any) -> Reference:
    from inferd.server.monitoring.bins import BINS

    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ReferenceError(f"not an inferd reference (its 'format' is not '{FORMAT}')")
    if data.get("format_version") != FORMAT_VERSION:
        raise ReferenceError(
            f"reference format_version {data.get('format_version')!r} is not supported "
            f"(this server reads {FORMAT_VERSION})"
        )
    tensors: dict[str, TensorReference] = {}
    for item in data.get("tensors") or []:
        features = int(item.get("features", 0))
        role = item.get("role")
        if role not in ("input", "output") or features < 1:
            raise ReferenceError("each tensor needs a role (input/output) and features >= 1")
        classes = item.get("class_shares")
        tensors[f"{role}:{item['name']}"] = TensorReference(
            name=str(item["name"]),
            role=role,
            edges=_array(item, "edges", (features, BINS - 1)),
            shares=_array(item, "shares", (features, BINS)),
            minimum=_array(item, "min", (features,)),
            maximum=_array(item, "max", (features,)),
            null_share=_array(item, "null_share", (features,)),
            classes=None if classes is None else np.array(classes, dtype=np.float64),
        )
    return Reference(
        model=str(data.get("model", "")),
        rows=int(data.get("rows", 0)),
        source=str(data.get("source", "")),
        tensors=tensors,
        created=float(data.get("created", 0.0)),
    )


def load(path: Path) -> Reference:
    try:
        return parse(json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError) as exc:
        raise ReferenceError(f"cannot read {path.name}: {exc}") from exc
