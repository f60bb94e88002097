"""Benchmark-only models, written into a repository the runner serves.

``batching_reference`` stands in for an accelerator-like model, where one
engine call has a large fixed cost (weights streamed, kernels launched) and
each extra row is cheap: ``t(b) ≈ F + b·r``. It is what the batcher benchmark
needs: capacity in the hundreds of requests/s, so batching decisions (not RPC
overhead, not the Python client) decide goodput, and batching pays: a batch
of 16 costs about 2.5x a batch of 1, not 16x.

The fixed cost is a Loop of small matrix products on a constant state
(independent of the batch); the per-row cost is a stack of 2048-wide layers.
Timing depends on the CPU; the benchmark measures capacity in the same run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

NAME = "batching_reference"
#: Loop iterations of a 256x256 product: about 5 ms on one modern core.
FIXED_ITERATIONS = 1200
FIXED_DIM = 256
#: Per-row layers of width 2048 sharing one weight matrix: about 0.3 ms a row.
ROW_DIM = 2048
ROW_LAYERS = 10
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
    return model


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
    """Write the model into ``repository`` (idempotent) and return its folder."""
    folder = repository / NAME
    model_file = folder / "1" / "model.onnx"
    if not model_file.exists():
        model_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = model_file.with_suffix(".tmp")
        onnx.save(batching_reference_model(), str(tmp))
        tmp.replace(model_file)
    (folder / "config.pbtxt").write_text(CONFIG)
    return folder
