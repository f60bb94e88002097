"""Benchmark-only models, written into a repository the runner serves.

``batching_reference`` stands in for an accelerator-like model, where one
engine call has a large fixed cost (weights streamed, kernels launched) and
each extra row is cheap: ``t(b) ≈ F + b·r``. It is what the batcher benchmark
needs: capacity in the hundreds of requests/s, so batching decisions (not RPC
overhead, not the Python client) decide goodput, and batching pays: a batch
of 16 costs about 2.5x a batch of 1, not 16x.

The fixed cost is a Loop of small matrix products on a constant state
(independent of the batch); the per-row cost is a stack of layers narrow
enough that their one shared weight matrix stays in a core's cache. The
builder times this host's engine and picks the loop length and the number of
layers so that the model has the same shape everywhere (``FIXED_MS`` and
``ROW_MS``, the engine of known speed's constants): a fixed-size model
measured 14-17 ms for one row on a host whose memory could not stream its
weights fast enough, and no policy could meet the scenarios' 25 ms budget
there.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

NAME = "batching_reference"
#: The shape the builder aims for: one engine call costs FIXED_MS + rows x ROW_MS.
FIXED_MS = 4.85
ROW_MS = 0.27
#: Loop iterations of a 256x256 product before calibration.
FIXED_ITERATIONS = 1200
FIXED_DIM = 256
#: Per-row layers of width 512 sharing one 1 MiB weight matrix.
ROW_DIM = 512
ROW_LAYERS = 100
MAX_BATCH = 16


def batching_reference_model(
    fixed_iterations: int = FIXED_ITERATIONS, row_layers: int = ROW_LAYERS
) -> onnx.ModelProto:
    rng = np.random.default_rng(7)
    w = (rng.standard_normal((FIXED_DIM, FIXED_DIM)) / np.sqrt(FIXED_DIM)).astype(np.float32)
    v = (rng.standard_normal((ROW_DIM, ROW_DIM)) / np.sqrt(ROW_DIM)).astype(np.float32)
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond"], ["cond_out"]),
            helper.make_node("MatMul", ["state", "W"], ["product"]),
            helper.make_node("Tanh", ["product"], ["state_out"]),
        ],
        "fixed_cost",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
            helper.make_tensor_value_info("state", TensorProto.FLOAT, [1, FIXED_DIM]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("state_out", TensorProto.FLOAT, [1, FIXED_DIM]),
        ],
    )

    def const(name: str, value: np.ndarray) -> onnx.NodeProto:
        return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value))

    nodes = [
        const("iterations", np.array(fixed_iterations, np.int64)),
        const("true", np.array(True)),
        const("state0", np.ones((1, FIXED_DIM), np.float32)),
        helper.make_node("Loop", ["iterations", "true", "state0"], ["state"], body=body),
        helper.make_node("ReduceMean", ["state"], ["bias"], keepdims=1),
    ]
    current = "x"
    for i in range(row_layers):
        nodes.append(helper.make_node("MatMul", [current, "V"], [f"h{i}"]))
        nodes.append(helper.make_node("Relu", [f"h{i}"], [f"r{i}"]))
        current = f"r{i}"
    nodes.append(helper.make_node("Add", [current, "bias"], ["y"]))
    graph = helper.make_graph(
        nodes,
        NAME,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", ROW_DIM])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", ROW_DIM])],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(v, "V")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    model.doc_string = f"fixed_iterations={fixed_iterations} row_layers={row_layers}"
    return model


def _call_ms(model: onnx.ModelProto, rows: int, calls: int = 15) -> float:
    """Median time of one engine call with ``rows`` rows, one ORT thread."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    feed = {"x": np.ones((rows, ROW_DIM), np.float32)}
    session.run(None, feed)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def calibrated_model(fixed_ms: float = FIXED_MS, row_ms: float = ROW_MS) -> onnx.ModelProto:
    """The model sized on this host so that one call takes about
    ``fixed_ms + rows x row_ms`` (a second or two of timing)."""
    probe_layers = 20
    probe = batching_reference_model(fixed_iterations=1, row_layers=probe_layers)
    per_layer_row = (_call_ms(probe, MAX_BATCH) - _call_ms(probe, 1)) / (MAX_BATCH - 1)
    layers = max(1, round(row_ms / max(per_layer_row / probe_layers, 1e-6)))
    base = _call_ms(batching_reference_model(fixed_iterations=1, row_layers=layers), 1)
    probe_iterations = 400
    looped = batching_reference_model(fixed_iterations=probe_iterations, row_layers=layers)
    per_iteration = max((_call_ms(looped, 1) - base) / (probe_iterations - 1), 1e-6)
    iterations = max(1, round((fixed_ms - base) / per_iteration))
    return batching_reference_model(fixed_iterations=iterations, row_layers=layers)


CONFIG = f"""name: "{NAME}"
platform: "onnxruntime_onnx"
max_batch_size: {MAX_BATCH}
input {{ name: "x" data_type: TYPE_FP32 dims: [ {ROW_DIM} ] }}
output {{ name: "y" data_type: TYPE_FP32 dims: [ {ROW_DIM} ] }}
dynamic_batching {{ }}
instance_group {{ count: 1 kind: KIND_CPU }}
parameters {{ key: "intra_op_thread_count" value {{ string_value: "1" }} }}
"""


def build_batching_reference(repository: Path) -> Path:
    """Write the model, sized for this host, into ``repository`` (idempotent)
    and return its folder."""
    folder = repository / NAME
    model_file = folder / "1" / "model.onnx"
    if not model_file.exists():
        model_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = model_file.with_suffix(".tmp")
        onnx.save(calibrated_model(), str(tmp))
        tmp.replace(model_file)
    (folder / "config.pbtxt").write_text(CONFIG)
    return folder
