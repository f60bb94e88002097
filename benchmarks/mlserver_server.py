"""Seldon MLServer as a peer: MLServer 1.7 serving the demo repository's ONNX
digits_mlp through a custom runtime (``OnnxRuntimeModel``, below: MLServer has
no ONNX runtime of its own) that runs onnxruntime with one intra-op thread, as
benchmarks.pytriton_server does.

    PEER_PYTHON -m benchmarks.mlserver_server --model PATH --grpc-port N
        --http-port N --metrics-port N [--max-batch-size N --max-batch-time S]

Runs under an interpreter of its own that has ``mlserver`` and ``onnxruntime``
(``python -m venv V && V/bin/pip install mlserver onnxruntime numpy``), from the
repository root (MLServer imports the runtime as
``benchmarks.mlserver_server.OnnxRuntimeModel``); it imports nothing of inferd.
It writes MLServer's settings.json and model-settings.json into a temporary
directory and runs ``mlserver start`` on it in this process. ``parallel_workers``
is 0: inference runs in MLServer's main process (on its event loop), one
process like the other servers, rather than in a pool of worker processes.
Adaptive batching is off unless ``--max-batch-size`` (> 1) and
``--max-batch-time`` (> 0) turn it on. ``debug`` is off (no per-request access
log). Metrics stay on, on their own port. 127.0.0.1 only.

MLServer lacks Triton's ModelConfig RPC, which perf_analyzer reads before it
starts ("failed to get model config: Method not found!" otherwise): the
launcher adds one to MLServer's gRPC server, a fixed config of the model's name
and max_batch_size 64 (the rows a request may carry, as inferd's and PyTriton's
configs say). MLServer's ModelStreamInfer is not Triton's: it streams bare
ModelInferResponse messages, not ModelStreamInferResponse, so perf_analyzer's
``--streaming`` reads the model name as an error message and fails at once.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class OnnxRuntimeModel(MLModel):
    """The model's ONNX file (``parameters.uri``) on onnxruntime's CPU
    provider, one intra-op thread and no spinning."""

    async def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        uri = self.settings.parameters.uri
        self._session = ort.InferenceSession(uri, options, providers=["CPUExecutionProvider"])
        self._input_name = self._session.get_inputs()[0].name
        self._output_names = [o.name for o in self._session.get_outputs()]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        request_input = next(i for i in payload.inputs if i.name == self._input_name)
        pixels = NumpyCodec.decode_input(request_input)
        results = self._session.run(self._output_names, {self._input_name: pixels})
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            outputs=[
                NumpyCodec.encode_output(name, result)
                for name, result in zip(self._output_names, results, strict=True)
            ],
        )


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, value: bytes | str | int) -> bytes:
    """One protobuf field: a varint for an int, length-delimited otherwise."""
    if isinstance(value, int):
        return _varint(number << 3) + _varint(value)
    data = value.encode() if isinstance(value, str) else value
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def model_config_response(name: str, max_batch_size: int) -> bytes:
    """Triton's ModelConfigResponse{config: ModelConfig{name, max_batch_size}},
    serialized by hand (MLServer's venv has no Triton protos)."""
    return _field(1, _field(1, name) + _field(4, max_batch_size))


def add_model_config_rpc(name: str, max_batch_size: int) -> None:
    """Give MLServer's gRPC server Triton's ModelConfig RPC, which it lacks and
    perf_analyzer reads once before it starts (for max_batch_size): a handler of
    its own beside MLServer's GRPCInferenceService, the inference path untouched."""
    import grpc
    from mlserver.grpc.server import GRPCServer

    response = model_config_response(name, max_batch_size)

    async def model_config(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return response

    handler = grpc.method_handlers_generic_handler(
        "inference.GRPCInferenceService",
        {"ModelConfig": grpc.unary_unary_rpc_method_handler(
            model_config, request_deserializer=bytes, response_serializer=bytes,
        )},
    )  # fmt: skip
    create_server = GRPCServer._create_server

    def _create_server(self: GRPCServer) -> grpc.aio.Server:
        server = create_server(self)
        server.add_generic_rpc_handlers((handler,))
        return server

    GRPCServer._create_server = _create_server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True, help="the ONNX file (digits_mlp's)")
    parser.add_argument("--name", default="digits_mlp")
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    parser.add_argument(
        "--max-batch-size", type=int, default=0,
        help="above 1 (with --max-batch-time), MLServer's adaptive batcher groups requests",
    )  # fmt: skip
    parser.add_argument("--max-batch-time", type=float, default=0.0,
                        help="seconds the adaptive batcher waits to fill a batch")  # fmt: skip
    opts = parser.parse_args(argv)

    # The metadata's input name is the model's (digits_mlp's is "pixels").
    session = ort.InferenceSession(opts.model, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    del session
    with tempfile.TemporaryDirectory(prefix="mlserver-") as tmp:
        root = Path(tmp)
        settings = {
            "debug": False,
            "host": "127.0.0.1",
            "http_port": opts.http_port,
            "grpc_port": opts.grpc_port,
            "metrics_port": opts.metrics_port,
            "parallel_workers": 0,
            "metrics_dir": str(root / "metrics"),
            "environments_dir": str(root / "envs"),
        }
        (root / "settings.json").write_text(json.dumps(settings, indent=2))
        model_dir = root / opts.name
        model_dir.mkdir()
        model_settings = {
            "name": opts.name,
            "implementation": "benchmarks.mlserver_server.OnnxRuntimeModel",
            "parameters": {"uri": str(Path(opts.model).resolve())},
            "max_batch_size": opts.max_batch_size,
            "max_batch_time": opts.max_batch_time,
            "inputs": [{"name": input_name, "datatype": "FP32", "shape": [-1, 64]}],
            "outputs": [
                {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]},
                {"name": "label", "datatype": "INT64", "shape": [-1, 1]},
            ],
        }
        (model_dir / "model-settings.json").write_text(json.dumps(model_settings, indent=2))
        print(f"mlserver serving {opts.name} on 127.0.0.1:{opts.grpc_port}", flush=True)

        from mlserver.cli.main import main as mlserver_main

        add_model_config_rpc(opts.name, 64)

        # `mlserver start DIR`, in this process (uvloop, MLServer's logging).
        sys.argv = ["mlserver", "start", str(root)]
        try:
            mlserver_main()
        except SystemExit as exc:
            return int(exc.code or 0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
