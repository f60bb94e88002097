"""The filter -> rerank demo: a cheap scorer, an expensive one, and a Python
BLS model that sends only the cheap scorer's best candidates on.

    python -m inferd.server.demo_rerank DEST

Each request is one query's candidates, ``features`` FP32 [rows, 32]:

* ``filter_cheap`` (ONNX): score = sigmoid(features @ w), one dot product per row.
* ``rerank_expensive`` (ONNX): a 32-2048-2048-1 ReLU MLP with a sigmoid, about
  8.5 MFLOP per row.
* ``rerank_pipeline`` (Python, BLS): calls ``filter_cheap`` on every row and
  ``rerank_expensive`` only on rows scoring over its ``threshold`` parameter
  (0.75: about one row in eight); answers ``score`` (the expensive score,
  -1 for rows filtered out) and ``kept``.
* ``rerank_all``: the same model.py with threshold -1, which skips the
  filter and reranks every row: the baseline.

Both Python models batch (``execute`` gets several queries) and issue their
BLS calls concurrently (``async_exec``), so the ONNX models batch them too.
Seeded weights; builds in well under a second.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from google.protobuf import text_format
from onnx import TensorProto, helper, numpy_helper

from inferd.protos import model_config_pb2
from inferd.server.demo_models import IR_VERSION, OPSET, model_config

FEATURES = 32
HIDDEN = 2048
THRESHOLD = 0.75
SEED = 7
#: The largest query (rows per request) the pipeline takes.
MAX_ROWS = 256
RERANK_NAMES = ("filter_cheap", "rerank_expensive", "rerank_pipeline", "rerank_all")

PIPELINE_MODEL = """
import asyncio
import json

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.threshold = float(config["parameters"]["threshold"]["string_value"])

    async def execute(self, requests):
        queries = [pb_utils.get_input_tensor_by_name(r, "features").as_numpy() for r in requests]
        if self.threshold >= 0:
            cheap = await asyncio.gather(*(self.score("filter_cheap", q) for q in queries))
            keeps = [c[:, 0] > self.threshold for c in cheap]
        else:  # the baseline: every row goes to the expensive model
            keeps = [np.ones(len(q), dtype=bool) for q in queries]
        ranked = await asyncio.gather(
            *(self.score("rerank_expensive", q[k]) for q, k in zip(queries, keeps) if k.any())
        )
        responses, ranked = [], iter(ranked)
        for query, keep in zip(queries, keeps):
            score = np.full((len(query), 1), -1.0, dtype=np.float32)
            if keep.any():
                score[keep] = next(ranked)
            responses.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("score", score), pb_utils.Tensor("kept", keep[:, None]),
            ]))
        return responses

    async def score(self, model, rows):
        request = pb_utils.InferenceRequest(
            model_name=model, requested_output_names=["score"],
            inputs=[pb_utils.Tensor("features", rows)],
        )
        response = await request.async_exec()
        if response.has_error():
            raise pb_utils.TritonModelException(response.error().message())
        return pb_utils.get_output_tensor_by_name(response, "score").as_numpy()
"""


def _onnx(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def _io() -> tuple[list[onnx.ValueInfoProto], list[onnx.ValueInfoProto]]:
    return (
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", FEATURES])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch", 1])],
    )


def weights() -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """The cheap model's vector (unit norm) and the expensive model's layers."""
    rng = np.random.default_rng(SEED)
    cheap = rng.standard_normal((FEATURES, 1)).astype(np.float32)
    cheap /= np.linalg.norm(cheap)
    layers = []
    for fan_in, fan_out in ((FEATURES, HIDDEN), (HIDDEN, HIDDEN), (HIDDEN, 1)):
        w = (rng.standard_normal((fan_in, fan_out)) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        layers.append((w, np.zeros(fan_out, dtype=np.float32)))
    return cheap, layers


def cheap_model() -> onnx.ModelProto:
    cheap, _ = weights()
    inputs, outputs = _io()
    nodes = [
        helper.make_node("MatMul", ["features", "w"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["score"]),
    ]
    inits = [numpy_helper.from_array(cheap, "w")]
    return _onnx(helper.make_graph(nodes, "filter_cheap", inputs, outputs, inits))


def expensive_model() -> onnx.ModelProto:
    _, layers = weights()
    inputs, outputs = _io()
    nodes, inits, current = [], [], "features"
    for i, (w, b) in enumerate(layers):
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes.append(helper.make_node("Gemm", [current, f"w{i}", f"b{i}"], [f"gemm{i}"]))
        current = f"gemm{i}"
        if i < len(layers) - 1:
            nodes.append(helper.make_node("Relu", [current], [f"relu{i}"]))
            current = f"relu{i}"
    nodes.append(helper.make_node("Sigmoid", [current], ["score"]))
    return _onnx(helper.make_graph(nodes, "rerank_expensive", inputs, outputs, inits))


def reference(features: np.ndarray, threshold: float = THRESHOLD) -> tuple[np.ndarray, np.ndarray]:
    """What ``rerank_pipeline`` answers, in numpy: (score, kept)."""
    cheap, layers = weights()
    keep = (1 / (1 + np.exp(-(features @ cheap))))[:, 0] > threshold
    h = features
    for i, (w, b) in enumerate(layers):
        h = h @ w + b
        if i < len(layers) - 1:
            h = np.maximum(h, 0)
    score = np.where(keep[:, None], 1 / (1 + np.exp(-h)), -1.0).astype(np.float32)
    return score, keep[:, None]


def pipeline_config(name: str, threshold: float) -> model_config_pb2.ModelConfig:
    config = model_config_pb2.ModelConfig(name=name, backend="python", max_batch_size=MAX_ROWS)
    config.input.add(name="features", data_type=model_config_pb2.TYPE_FP32, dims=[FEATURES])
    config.output.add(name="score", data_type=model_config_pb2.TYPE_FP32, dims=[1])
    config.output.add(name="kept", data_type=model_config_pb2.TYPE_BOOL, dims=[1])
    config.dynamic_batching.SetInParent()
    config.parameters["threshold"].string_value = str(threshold)
    return config


def build_rerank_models(root: Path) -> Path:
    """Write the four models into the repository ``root``; returns ``root``."""
    for name, model in (("filter_cheap", cheap_model()), ("rerank_expensive", expensive_model())):
        config = model_config(
            name, model, max_batch_size=MAX_ROWS, max_queue_delay_us=500, intra_op_threads=1
        )
        config.parameters["warmup_rounds"].string_value = "1"  # a quick start over precision
        (root / name / "1").mkdir(parents=True, exist_ok=True)
        (root / name / "1" / "model.onnx").write_bytes(model.SerializeToString())
        (root / name / "config.pbtxt").write_text(text_format.MessageToString(config))
    for name, threshold in (("rerank_pipeline", THRESHOLD), ("rerank_all", -1.0)):
        (root / name / "1").mkdir(parents=True, exist_ok=True)
        (root / name / "1" / "model.py").write_text(PIPELINE_MODEL)
        config = pipeline_config(name, threshold)
        (root / name / "config.pbtxt").write_text(text_format.MessageToString(config))
    return root


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inferd.server.demo_rerank")
    parser.add_argument("dest", type=Path, help="model repository to write the models into")
    args = parser.parse_args(argv)
    args.dest.mkdir(parents=True, exist_ok=True)
    build_rerank_models(args.dest)
    print(f"filter -> rerank models written to {args.dest}: {', '.join(RERANK_NAMES)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
