"""Generate the bundled demo model repository (Triton layout).

    python -m inferd.server.demo_models DEST [--force]

Layout of DEST::

    .inferd-demo-repository.json     marker: generator version, model names
    <model>/config.pbtxt             Triton ModelConfig, text format
    <model>/model_card.json
    <model>/1/model.onnx

Models:

* ``digits_mlp``: 64-256-256-10 float32 MLP trained with scikit-learn on the
  bundled 8x8 digits set. Input ``pixels`` takes raw pixel values 0..16; the
  graph divides by 16 as training did.
* ``text_stats``: INT64, FP16 and BYTES tensors, no trained parameters.
* ``dense_reference``: compute-heavy float32 MLP with seeded random weights,
  for benchmarks.

Everything is deterministic (fixed seeds) apart from ``training_commit`` in
the model cards.
"""

from __future__ import annotations

import argparse
import errno
import itertools
import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from google.protobuf import text_format
from onnx import TensorProto, helper, numpy_helper

from inferd.protos import model_config_pb2

#: Bump whenever the generated files change, so existing repositories rebuild.
GENERATOR_VERSION = 2
MARKER = ".inferd-demo-repository.json"
MODEL_NAMES = ("digits_mlp", "text_stats", "dense_reference")

# Opset 17 / IR 8 load on every onnxruntime this project supports (>= 1.18).
OPSET = 17
IR_VERSION = 8

DIGITS_SEED = 0
DIGITS_MAX_ITER = 50  # ~0.4 s of training, held-out accuracy ~0.98
DENSE_SEED = 0
#: dense_reference layer widths: input D, hidden layers, output K.
DENSE_DIMS = (1024, 2048, 2048, 1024, 256)

_OWNER = "inferd maintainers"

log = logging.getLogger("inferd.demo_models")


# --------------------------------------------------------------------------- models


@dataclass(frozen=True)
class DigitsTraining:
    """The trained digits classifier with its held-out split (pixels are 0..16)."""

    classifier: Any  # sklearn.neural_network.MLPClassifier
    x_test: np.ndarray
    y_test: np.ndarray
    accuracy: float


def train_digits() -> DigitsTraining:
    """Train the digits MLP deterministically."""
    from sklearn.datasets import load_digits
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier
    from threadpoolctl import threadpool_limits  # a scikit-learn dependency

    digits = load_digits()
    x = digits.data.astype(np.float32)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, random_state=DIGITS_SEED, stratify=y
    )
    clf = MLPClassifier(
        hidden_layer_sizes=(256, 256),
        activation="relu",
        max_iter=DIGITS_MAX_ITER,
        random_state=DIGITS_SEED,
    )
    # One BLAS thread: these matrices are too small to share, and waiting BLAS
    # threads spin, worst on a busy machine (docs/experiments/demo-build-time.md).
    with warnings.catch_warnings(), threadpool_limits(1):
        # The iteration cap is deliberate (build time); accuracy is checked instead.
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x_train / np.float32(16), y_train)
    accuracy = float(clf.score(x_test / np.float32(16), y_test))
    return DigitsTraining(clf, x_test, y_test, accuracy)


def _model(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="inferd.demo_models"
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def _dense_layers(
    nodes: list[onnx.NodeProto],
    inits: list[onnx.TensorProto],
    source: str,
    weights: Sequence[tuple[np.ndarray, np.ndarray]],
    prefix: str,
) -> str:
    """Gemm+Relu for every layer, Gemm alone for the last; returns its output."""
    current = source
    for i, (w, b) in enumerate(weights):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(w, np.float32), f"{prefix}w{i}"))
        inits.append(numpy_helper.from_array(np.ascontiguousarray(b, np.float32), f"{prefix}b{i}"))
        gemm = f"{prefix}gemm{i}"
        nodes.append(helper.make_node("Gemm", [current, f"{prefix}w{i}", f"{prefix}b{i}"], [gemm]))
        if i < len(weights) - 1:
            nodes.append(helper.make_node("Relu", [gemm], [f"{prefix}relu{i}"]))
            current = f"{prefix}relu{i}"
        else:
            current = gemm
    return current


def digits_model(training: DigitsTraining) -> onnx.ModelProto:
    """pixels FP32 [-1, 64] (0..16) -> probabilities FP32 [-1, 10], label INT64 [-1, 1]."""
    clf = training.classifier
    if list(clf.classes_) != list(range(10)):  # argmax index doubles as the label
        raise RuntimeError(f"unexpected digit classes {clf.classes_}")
    nodes = [helper.make_node("Mul", ["pixels", "scale"], ["scaled"])]
    inits = [numpy_helper.from_array(np.array(1 / 16, dtype=np.float32), "scale")]
    logits = _dense_layers(
        nodes, inits, "scaled", list(zip(clf.coefs_, clf.intercepts_, strict=True)), ""
    )
    nodes.append(helper.make_node("Softmax", [logits], ["probabilities"], axis=1))
    nodes.append(helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=1))
    graph = helper.make_graph(
        nodes,
        "digits_mlp",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["batch", 64])],
        [
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 10]),
            helper.make_tensor_value_info("label", TensorProto.INT64, ["batch", 1]),
        ],
        inits,
    )
    return _model(graph)


def text_stats_model() -> onnx.ModelProto:
    """token_ids INT64 [-1, 8], weights FP16 [-1, 8], tag BYTES [-1, 1] ->
    id_sum INT64 [-1, 1], weighted FP16 [-1, 8], tag_echo BYTES [-1, 1]."""
    nodes = [
        helper.make_node("ReduceSum", ["token_ids", "axis1"], ["id_sum"], keepdims=1),
        helper.make_node("Cast", ["token_ids"], ["ids_fp16"], to=TensorProto.FLOAT16),
        helper.make_node("Mul", ["ids_fp16", "weights"], ["weighted"]),
        helper.make_node("Identity", ["tag"], ["tag_echo"]),
    ]
    graph = helper.make_graph(
        nodes,
        "text_stats",
        [
            helper.make_tensor_value_info("token_ids", TensorProto.INT64, ["batch", 8]),
            helper.make_tensor_value_info("weights", TensorProto.FLOAT16, ["batch", 8]),
            helper.make_tensor_value_info("tag", TensorProto.STRING, ["batch", 1]),
        ],
        [
            helper.make_tensor_value_info("id_sum", TensorProto.INT64, ["batch", 1]),
            helper.make_tensor_value_info("weighted", TensorProto.FLOAT16, ["batch", 8]),
            helper.make_tensor_value_info("tag_echo", TensorProto.STRING, ["batch", 1]),
        ],
        [numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1")],
    )
    return _model(graph)


def dense_weights(dims: Sequence[int] = DENSE_DIMS) -> list[tuple[np.ndarray, np.ndarray]]:
    """He-scaled normal weights so activations stay O(1) through the ReLUs."""
    rng = np.random.default_rng(DENSE_SEED)
    layers = []
    for fan_in, fan_out in itertools.pairwise(dims):
        w = rng.standard_normal((fan_in, fan_out), dtype=np.float32)
        w *= np.float32(np.sqrt(2.0 / fan_in))
        b = rng.standard_normal(fan_out, dtype=np.float32) * np.float32(0.01)
        layers.append((w, b))
    return layers


def dense_reference_model(dims: Sequence[int] = DENSE_DIMS) -> onnx.ModelProto:
    """x FP32 [-1, D] -> y FP32 [-1, K]; Gemm+Relu stack of ``dims``."""
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    last = _dense_layers(nodes, inits, "x", dense_weights(dims), "")
    nodes.append(helper.make_node("Identity", [last], ["y"]))
    graph = helper.make_graph(
        nodes,
        "dense_reference",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", dims[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", dims[-1]])],
        inits,
    )
    return _model(graph)


# --------------------------------------------------------------------------- configs

# onnx elem_type -> Triton config data type
_CONFIG_TYPES: dict[int, int] = {
    TensorProto.BOOL: model_config_pb2.TYPE_BOOL,
    TensorProto.INT64: model_config_pb2.TYPE_INT64,
    TensorProto.FLOAT16: model_config_pb2.TYPE_FP16,
    TensorProto.FLOAT: model_config_pb2.TYPE_FP32,
    TensorProto.STRING: model_config_pb2.TYPE_STRING,
}


def _dims(value_info: onnx.ValueInfoProto) -> list[int]:
    # The first dim is the batch dim, which Triton configs leave out.
    dims = value_info.type.tensor_type.shape.dim[1:]
    return [d.dim_value if d.HasField("dim_value") else -1 for d in dims]


def model_config(
    name: str,
    model: onnx.ModelProto,
    *,
    max_batch_size: int,
    max_queue_delay_us: int,
    intra_op_threads: int,
) -> model_config_pb2.ModelConfig:
    """A Triton ModelConfig whose tensors mirror the ONNX graph's."""
    config = model_config_pb2.ModelConfig(
        name=name, platform="onnxruntime_onnx", max_batch_size=max_batch_size
    )
    for vi in model.graph.input:
        config.input.add(
            name=vi.name,
            data_type=_CONFIG_TYPES[vi.type.tensor_type.elem_type],
            dims=_dims(vi),
        )
    for vi in model.graph.output:
        config.output.add(
            name=vi.name,
            data_type=_CONFIG_TYPES[vi.type.tensor_type.elem_type],
            dims=_dims(vi),
        )
    config.dynamic_batching.max_queue_delay_microseconds = max_queue_delay_us
    config.instance_group.add(count=1, kind=model_config_pb2.ModelInstanceGroup.KIND_CPU)
    config.parameters["intra_op_thread_count"].string_value = str(intra_op_threads)
    return config


# --------------------------------------------------------------------------- repository


def _training_commit() -> str:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    commit = result.stdout.strip()
    return commit if len(commit) == 40 else "unknown"


def _write_model(
    root: Path,
    name: str,
    model: onnx.ModelProto,
    config: model_config_pb2.ModelConfig,
    card: dict[str, Any],
) -> None:
    model_dir = root / name
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "1" / "model.onnx").write_bytes(model.SerializeToString())
    (model_dir / "config.pbtxt").write_text(text_format.MessageToString(config))
    (model_dir / "model_card.json").write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")


def _built(name: str, started: float) -> float:
    """Log one progress line for model ``name``; returns the next start time."""
    now = time.perf_counter()
    log.info("demo model '%s' built in %.2f s", name, now - started, extra={"model": name})
    return now


def _param_count(model: onnx.ModelProto) -> int:
    return sum(int(np.prod(t.dims)) for t in model.graph.initializer)


def _build_into(root: Path) -> None:
    import sklearn

    commit = _training_commit()
    started = time.perf_counter()
    training = train_digits()
    digits = digits_model(training)
    _write_model(
        root,
        "digits_mlp",
        digits,
        # A 2 ms window leaves room to wait for fuller batches while the event
        # loop is the bottleneck (docs/experiments/loop-bound-batching.md).
        model_config(
            "digits_mlp", digits, max_batch_size=64, max_queue_delay_us=2000, intra_op_threads=1
        ),
        {
            "owner": _OWNER,
            "description": "64-256-256-10 ReLU MLP classifying 8x8 handwritten digits. "
            "Input: 64 raw pixel intensities 0..16 (the graph divides by 16).",
            "intended_use": "Demos, tests and benchmarks of the server; "
            "not a production OCR model.",
            "data_version": f"sklearn.datasets.load_digits (scikit-learn {sklearn.__version__}); "
            f"stratified 75/25 split, random_state={DIGITS_SEED}",
            "training_commit": commit,
            "metrics": {
                "accuracy": round(training.accuracy, 6),
                "test_samples": len(training.y_test),
                "parameters": _param_count(digits),
            },
        },
    )
    started = _built("digits_mlp", started)

    text = text_stats_model()
    _write_model(
        root,
        "text_stats",
        text,
        model_config(
            "text_stats", text, max_batch_size=32, max_queue_delay_us=100, intra_op_threads=1
        ),
        {
            "owner": _OWNER,
            "description": "Exercises INT64, FP16 and BYTES tensors: id_sum = sum of token_ids "
            "per row, weighted = token_ids * weights in FP16, tag_echo = tag.",
            "intended_use": "Protocol and datatype tests.",
            "data_version": "none (no trained parameters)",
            "training_commit": commit,
            "metrics": {"parameters": _param_count(text)},
        },
    )
    started = _built("text_stats", started)

    dense = dense_reference_model()
    flops = 2 * sum(a * b for a, b in itertools.pairwise(DENSE_DIMS))
    _write_model(
        root,
        "dense_reference",
        dense,
        model_config(
            "dense_reference", dense, max_batch_size=32, max_queue_delay_us=1000, intra_op_threads=1
        ),
        {
            "owner": _OWNER,
            "description": "Float32 ReLU MLP "
            + "-".join(str(d) for d in DENSE_DIMS)
            + f" with random weights (seed {DENSE_SEED}); about 3 ms per batch of 32 on one "
            "modern x86 core.",
            "intended_use": "Compute-bound reference load for throughput and batching benchmarks. "
            "Outputs carry no meaning.",
            "data_version": f"none (random weights, numpy default_rng seed {DENSE_SEED})",
            "training_commit": commit,
            "metrics": {"parameters": _param_count(dense), "flops_per_sample": flops},
        },
    )
    _built("dense_reference", started)

    marker = {"generator_version": GENERATOR_VERSION, "models": list(MODEL_NAMES)}
    (root / MARKER).write_text(json.dumps(marker) + "\n")


def _read_marker(dest: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((dest / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_complete(dest: Path) -> bool:
    """True when ``dest`` holds every model built by this generator version."""
    marker = _read_marker(dest)
    if marker is None or marker.get("generator_version") != GENERATOR_VERSION:
        return False
    return all(
        (dest / name / f).is_file()
        for name in MODEL_NAMES
        for f in ("config.pbtxt", "model_card.json", "1/model.onnx")
    )


def _install(tmp: Path, dest: Path, force: bool) -> None:
    """Rename ``tmp`` to ``dest``; an existing demo repository is replaced."""
    for _ in range(5):
        try:
            os.rename(tmp, dest)  # atomic; refuses a non-empty dest directory
            return
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
        if not force and is_complete(dest):
            return  # a concurrent builder got there first
        if _read_marker(dest) is None:
            # Never delete a directory that this generator did not write.
            raise FileExistsError(f"{dest} exists and is not a demo model repository")
        old = dest.with_name(f".{dest.name}.old-{uuid.uuid4().hex}")
        try:
            os.rename(dest, old)
        except FileNotFoundError:
            continue  # someone else moved it; try again
        try:
            os.rename(tmp, dest)
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            continue
        finally:
            shutil.rmtree(old, ignore_errors=True)
        return
    raise RuntimeError(
        f"could not install the demo repository at {dest}: too many concurrent builds"
    )


def build_demo_repository(dest: Path, *, force: bool = False) -> Path:
    """Build the demo repository at ``dest`` and return ``dest``.

    Returns at once when ``dest`` already holds a complete repository from
    this generator version, unless ``force``. The models are built in a
    hidden sibling directory and renamed into place, so ``dest`` is never seen
    half written.
    """
    dest = Path(dest)
    if not force and is_complete(dest):
        return dest
    log.info("building the demo model repository at %s", dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700
        _build_into(tmp)
        _install(tmp, dest, force)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # a no-op once renamed
    return dest


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m inferd.server.demo_models",
        description="Generate the bundled demo model repository (Triton layout).",
    )
    parser.add_argument("dest", type=Path, help="repository directory to create")
    parser.add_argument("--force", action="store_true", help="rebuild even if up to date")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    path = build_demo_repository(args.dest, force=args.force)
    print(f"demo model repository ready at {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
