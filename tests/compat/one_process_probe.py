"""Call an inferd server with tritonclient.grpc and inferd's client from one process.

    python tests/compat/one_process_probe.py --url HOST:PORT [--ours-first] [--without-triton]

The test runs it with the newest tritonclient (and the protobuf it brings) or the
newest protobuf first on PYTHONPATH, so the imports below are the point: both
clients' protocol descriptors must load into one descriptor pool. Prints one
JSON object on stdout; exits non-zero if an import or a call fails.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
from types import ModuleType
from typing import Any

import numpy as np

MODEL = "digits_mlp"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--ours-first", action="store_true")
    parser.add_argument("--without-triton", action="store_true")
    opts = parser.parse_args()
    names = ["inferd.clients"] if opts.without_triton else ["tritonclient.grpc", "inferd.clients"]
    if opts.ours_first:
        names.reverse()
    modules = {name: importlib.import_module(name) for name in names}

    import google.protobuf

    pixels = np.random.default_rng(0).random((3, 64), dtype=np.float32)
    report: dict[str, Any] = {"protobuf": google.protobuf.__version__}
    ours = modules["inferd.clients"].InferenceClient(opts.url)
    with ours:
        report["ours"] = {
            "metadata": ours.model_metadata(MODEL),
            "labels": ours.infer(MODEL, {"pixels": pixels})["label"].tolist(),
        }
    if not opts.without_triton:
        report["tritonclient"] = importlib.metadata.version("tritonclient")
        report["triton"] = _triton_calls(modules["tritonclient.grpc"], opts.url, pixels)
    print(json.dumps(report))


def _triton_calls(triton: ModuleType, url: str, pixels: np.ndarray) -> dict[str, Any]:
    client = triton.InferenceServerClient(url)
    try:
        tensor = triton.InferInput("pixels", list(pixels.shape), "FP32")
        tensor.set_data_from_numpy(pixels)
        result = client.infer(MODEL, [tensor])
        return {
            "live": client.is_server_live(),
            "metadata": client.get_model_metadata(MODEL, as_json=True),
            "labels": result.as_numpy("label").tolist(),
        }
    finally:
        client.close()


if __name__ == "__main__":
    main()
