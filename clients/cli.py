"""``inferd infer`` and ``inferd models``: client subcommands for the inferd CLI.

``server/cli.py`` dispatches here; each entry point takes the arguments after
the subcommand name and returns the exit status: 0 success, 1 the server
refused or could not be reached, 2 bad arguments or input files.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from clients._codec import InferResult, NDArray
from clients.errors import InferenceServerError
from clients.sync import InferenceClient
from protos.datatypes import v2_datatype

DEFAULT_URL = "127.0.0.1:8001"


def infer_main(argv: list[str]) -> int:
    """``inferd infer MODEL --input NAME=FILE.npy [...] [--output NAME ...]``."""
    parser = argparse.ArgumentParser(
        prog="inferd infer", description="Send one inference request and print the outputs."
    )
    parser.add_argument("model", help="model name")
    parser.add_argument(
        "--input",
        "-i",
        dest="inputs",
        action="append",
        required=True,
        type=_input_spec,
        metavar="NAME=FILE.npy",
        help="an input tensor from a .npy file (repeat for each input)",
    )
    parser.add_argument(
        "--output",
        "-o",
        dest="outputs",
        action="append",
        metavar="NAME",
        help="request only this output (repeatable; default: all)",
    )
    _add_url(parser)
    parser.add_argument("--version", default="", help="model version (default: server's choice)")
    parser.add_argument("--timeout", type=float, help="deadline in seconds")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = _parse(parser, argv)
    if isinstance(args, int):
        return args

    inputs: dict[str, NDArray] = {}
    for name, path in args.inputs:
        if name in inputs:
            return _fail(f"input {name!r} given more than once", 2)
        try:
            inputs[name] = _load_npy(path)
        except (OSError, ValueError, EOFError) as err:
            return _fail(f"input {name!r}: cannot read {path}: {err}", 2)

    try:
        with InferenceClient(args.url) as client:
            result = client.infer(
                args.model,
                inputs,
                outputs=args.outputs,
                version=args.version,
                timeout=args.timeout,
            )
    except InferenceServerError as err:
        return _fail(str(err), 1)
    except (ValueError, TypeError) as err:  # an input the protocol cannot carry
        return _fail(str(err), 2)

    if args.json:
        print(json.dumps(_result_json(result), indent=2))
    else:
        print(f"model {result.model_name} version {result.model_version}")
        for name, array in result.items():
            print(f"{name}  {v2_datatype(array.dtype)}  {list(array.shape)}")
            print(repr(array))
    return 0


def models_main(argv: list[str]) -> int:
    """``inferd models``: the server's repository index as a table."""
    parser = argparse.ArgumentParser(
        prog="inferd models", description="List the models in the server's repository."
    )
    _add_url(parser)
    parser.add_argument("--ready", action="store_true", help="only models ready for inference")
    parser.add_argument("--json", action="store_true", help="print the index as JSON")
    args = _parse(parser, argv)
    if isinstance(args, int):
        return args
    try:
        with InferenceClient(args.url) as client:
            models = client.repository_index(ready=args.ready)
    except InferenceServerError as err:
        return _fail(str(err), 1)
    if args.json:
        print(json.dumps(models, indent=2))
    else:
        columns = ("name", "version", "state", "reason")
        rows = [[c.upper() for c in columns]]
        rows += [[str(model.get(c, "")) for c in columns] for model in models]
        widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
        for row in rows:
            cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
            print("  ".join(cells).rstrip())
    return 0


def _add_url(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url", default=DEFAULT_URL, help=f"server gRPC address (default {DEFAULT_URL})"
    )


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace | int:
    # argparse exits on --help and on errors; the CLI wants a status back.
    try:
        return parser.parse_args(list(argv))
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 0 if exit_.code is None else 2


def _input_spec(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=FILE.npy, got {text!r}")
    return name, path


def _load_npy(path: str) -> NDArray:
    # No pickles: a .npy from elsewhere must not run code. BYTES inputs
    # therefore come as fixed-width str/bytes arrays, not object arrays.
    loaded = np.load(path, allow_pickle=False)
    if not isinstance(loaded, np.ndarray):
        loaded.close()
        raise ValueError("not a .npy array file (an .npz archive?)")
    return loaded


def _fail(message: str, status: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return status


def _result_json(result: InferResult) -> dict[str, Any]:
    return {
        "model_name": result.model_name,
        "model_version": result.model_version,
        "id": result.id,
        "parameters": result.parameters,
        "outputs": {
            name: {
                "datatype": v2_datatype(array.dtype),
                "shape": list(array.shape),
                "data": _json_data(array),
            }
            for name, array in result.items()
        },
    }


def _json_data(array: NDArray) -> Any:
    datatype = v2_datatype(array.dtype)
    if datatype == "BYTES":
        # JSON has no bytes; non-UTF-8 bytes show as \x escapes.
        text = [bytes(b).decode("utf-8", "backslashreplace") for b in array.reshape(-1)]
        return np.array(text, dtype=object).reshape(array.shape).tolist()
    if datatype in ("FP16", "BF16"):
        return array.astype(np.float64).tolist()
    return array.tolist()
