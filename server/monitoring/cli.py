"""``inferd monitor reference MODEL --input FILES``: score a sample with the
model, offline, and write its reference distributions
(``<model>/monitoring/reference.json``, docs/monitoring.md#reference-format)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from inferd.server.extras import missing_module, needs_extra
from inferd.server.monitoring.readers import InputFileError, read_inputs
from inferd.server.monitoring.reference import REFERENCE_PATH, Reference, build


def score(
    repository: Path, model: str, inputs_of: Sequence[Path], version: int | None, max_rows: int
) -> Reference:
    """Run the files' rows through ``model`` and build its reference."""
    from inferd.engines import load_engine
    from inferd.server.repository import ModelRepository, engine_options

    source = ModelRepository(repository).source(model)
    chosen = version if version is not None else max(source.versions)
    if chosen not in source.versions:
        raise InputFileError(f"model '{model}' has no version {chosen}")
    engine = load_engine(source.platform, source.versions[chosen], engine_options(source.config))
    try:
        names = [spec.name for spec in engine.signature.inputs]
        inputs = {k: v[:max_rows] for k, v in read_inputs(inputs_of, names).items()}
        rows = len(next(iter(inputs.values())))
        step = max(1, source.config.max_batch_size or rows)
        parts: dict[str, list[np.ndarray]] = {}
        for start in range(0, rows, step):
            batch = {k: v[start : start + step] for k, v in inputs.items()}
            for name, array in engine.infer(batch).items():
                parts.setdefault(name, []).append(array)
        outputs = {name: np.concatenate(arrays) for name, arrays in parts.items()}
    finally:
        engine.close()
    return build(model, inputs, outputs, rows, f"inferd monitor reference (version {chosen})")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="inferd monitor", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    ref = sub.add_parser("reference", help="write a model's reference distributions")
    ref.add_argument("model")
    ref.add_argument(
        "--input",
        nargs="+",
        type=Path,
        required=True,
        metavar="FILE",
        help=".npy (one input), .npz (one array per input) or .parquet files",
    )
    ref.add_argument("--model-repository", type=Path, default=Path("."), metavar="DIR")
    ref.add_argument("--version", type=int, default=None, help="default: the highest")
    ref.add_argument("--max-rows", type=int, default=100_000)
    ref.add_argument(
        "--output", type=Path, default=None, help=f"default: DIR/MODEL/{REFERENCE_PATH}"
    )
    opts = parser.parse_args(argv)
    missing = missing_module("inferd.engines.onnx")  # scoring loads the model's engine
    if missing is not None:
        print(f"error: {needs_extra('monitor', 'server', missing)}", file=sys.stderr)
        return 2
    try:
        reference = score(
            opts.model_repository, opts.model, opts.input, opts.version, opts.max_rows
        )
    except Exception as exc:  # one line for the operator, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    output = opts.output or opts.model_repository / opts.model / REFERENCE_PATH
    reference.save(output)
    print(f"{output}: {reference.rows} rows, tensors {', '.join(sorted(reference.tensors))}")
    return 0
