"""Small real ONNX models and ensemble configs for the ensemble and cache tests.

Every model takes and returns FP32 [batch, 4] (``max_batch_size`` 8):

- ``scale``: y = x * 3
- ``shift``: y = x + 1
- ``add2``: y = a + b (two inputs)

Ensembles over them: ``chain`` (x -> scale -> shift -> y) and ``diamond``
(x -> scale and x -> shift in parallel, then add2 of both -> y).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

WIDTH = 4

MODEL_CONFIG = """
name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: 8
{inputs}
output {{ name: "y" data_type: TYPE_FP32 dims: [ {width} ] }}
dynamic_batching {{ }}
parameters {{ key: "warmup_rounds" value {{ string_value: "1" }} }}
parameters {{ key: "intra_op_thread_count" value {{ string_value: "1" }} }}
{extra}
"""


def _tensor(name: str) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", WIDTH])


def _save(graph: onnx.GraphProto, path: Path) -> None:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def write_model(root: Path, name: str, extra: str = "") -> None:
    """One of ``scale``, ``shift``, ``add2`` (under ``name`` when it is the
    kind's name, e.g. ``scale``), version 1, with its config."""
    kind = name if name in ("scale", "shift", "add2") else name.split("_")[0]
    inputs = ["a", "b"] if kind == "add2" else ["x"]
    if kind == "scale":
        const = numpy_helper.from_array(np.array(3.0, dtype=np.float32), "k")
        node = helper.make_node("Mul", ["x", "k"], ["y"])
    elif kind == "shift":
        const = numpy_helper.from_array(np.array(1.0, dtype=np.float32), "k")
        node = helper.make_node("Add", ["x", "k"], ["y"])
    else:
        const = None
        node = helper.make_node("Add", ["a", "b"], ["y"])
    graph = helper.make_graph(
        [node], kind, [_tensor(i) for i in inputs], [_tensor("y")], [const] if const else []
    )
    _save(graph, root / name / "1" / "model.onnx")
    declared = "\n".join(
        f'input {{ name: "{i}" data_type: TYPE_FP32 dims: [ {WIDTH} ] }}' for i in inputs
    )
    (root / name / "config.pbtxt").write_text(
        MODEL_CONFIG.format(name=name, inputs=declared, width=WIDTH, extra=extra)
    )


def step(model: str, inputs: dict[str, str], outputs: dict[str, str], version: int = -1) -> str:
    maps = "".join(f' input_map {{ key: "{k}" value: "{v}" }}' for k, v in inputs.items())
    maps += "".join(f' output_map {{ key: "{k}" value: "{v}" }}' for k, v in outputs.items())
    return f'step {{ model_name: "{model}" model_version: {version}{maps} }}'


def write_ensemble(
    root: Path,
    name: str,
    steps: list[str],
    *,
    inputs: tuple[str, ...] = ("x",),
    outputs: tuple[str, ...] = ("y",),
    max_batch_size: int = 8,
    extra: str = "",
) -> None:
    lines = [f'name: "{name}"', 'platform: "ensemble"', f"max_batch_size: {max_batch_size}"]
    lines += [f'input {{ name: "{i}" data_type: TYPE_FP32 dims: [ {WIDTH} ] }}' for i in inputs]
    lines += [f'output {{ name: "{o}" data_type: TYPE_FP32 dims: [ {WIDTH} ] }}' for o in outputs]
    lines += ["ensemble_scheduling {", *steps, "}", extra]
    (root / name / "1").mkdir(parents=True, exist_ok=True)
    (root / name / "config.pbtxt").write_text("\n".join(lines) + "\n")


def chain_and_diamond(root: Path) -> Path:
    """scale, shift, add2 and the two ensembles over them."""
    for name in ("scale", "shift", "add2"):
        write_model(root, name)
    write_ensemble(
        root,
        "chain",
        [step("scale", {"x": "x"}, {"y": "scaled"}), step("shift", {"x": "scaled"}, {"y": "y"})],
    )
    write_ensemble(
        root,
        "diamond",
        [
            # Listed consumer first: the order in the file is not the order of execution.
            step("add2", {"a": "scaled", "b": "shifted"}, {"y": "y"}),
            step("scale", {"x": "x"}, {"y": "scaled"}),
            step("shift", {"x": "x"}, {"y": "shifted"}),
        ],
    )
    return root


def chain_reference(x: np.ndarray) -> np.ndarray:
    return x * np.float32(3) + np.float32(1)


def diamond_reference(x: np.ndarray) -> np.ndarray:
    return x * np.float32(3) + (x + np.float32(1))
