"""The real Triton C++ front end as a peer: Triton 2.51 through PyTriton 0.7,
serving an ONNX model of the demo repository from a Python function that runs
onnxruntime with one intra-op thread (as inferd's demo config does).

    PEER_PYTHON -m benchmarks.pytriton_server --model PATH --grpc-port N

Runs under an interpreter of its own that has ``nvidia-pytriton`` and
``onnxruntime`` (``python -m venv V && V/bin/pip install nvidia-pytriton
onnxruntime``); it imports nothing of inferd. Endpoints are left unrestricted so
perf_analyzer can read the model's metadata. Triton's dynamic batcher is on with
no queue delay (its default), up to 64 rows. 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True, help="the ONNX file (digits_mlp's)")
    parser.add_argument("--name", default="digits_mlp")
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    opts = parser.parse_args(argv)

    # PyTriton's stub loads libpython: the one of this interpreter, not the system's.
    lib = str(Path(sys.executable).resolve().parent.parent / "lib")
    os.environ["LD_LIBRARY_PATH"] = lib + os.pathsep + os.environ.get("LD_LIBRARY_PATH", "")

    import onnxruntime as ort
    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(opts.model, options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    output_names = [o.name for o in session.get_outputs()]

    @batch  # type: ignore[misc]
    def infer(**inputs: np.ndarray) -> dict[str, Any]:
        results = session.run(output_names, {input_name: inputs[input_name]})
        return dict(zip(output_names, results, strict=True))

    config = TritonConfig(
        grpc_address="127.0.0.1",
        http_address="127.0.0.1",
        grpc_port=opts.grpc_port,
        http_port=opts.http_port,
        metrics_port=opts.metrics_port,
        log_verbose=0,
    )
    with Triton(config=config, security_config=TritonSecurityConfig(restricted_endpoints=[])) as t:
        t.bind(
            model_name=opts.name,
            infer_func=infer,
            inputs=[Tensor(name=input_name, dtype=np.float32, shape=(64,))],
            outputs=[
                Tensor(name="probabilities", dtype=np.float32, shape=(10,)),
                Tensor(name="label", dtype=np.int64, shape=(1,)),
            ],
            config=ModelConfig(max_batch_size=64, batcher=DynamicBatcher()),
            strict=False,
        )
        print(f"pytriton serving {opts.name} on 127.0.0.1:{opts.grpc_port}", flush=True)
        t.serve()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
