"""``inferd build-engine``: build a TensorRT plan from an ONNX model.

    inferd build-engine MODEL.onnx -o REPO/MODEL/1/model.plan
        [--precision fp32|fp16|int8] [--workspace-mb N]
        [--batch-sizes 1,2,4,8 | --max-batch-size N | --config config.pbtxt]
        [--max-profiles N] [--exact-profiles] [--contexts N]
        [--input-shape NAME=DxD ...]
        [--calibration-data NAME=FILE.npy ...] [--calibration-batch N]
        [--calibration-cache FILE] [--device N] [--dry-run] [--force] [--quiet]

The batch sizes are the ones the server's scheduler will dispatch: every
size up to ``max_batch_size`` (from ``--max-batch-size``, the model's
``--config``, or the repository's auto-complete default 64). They are cut
into optimization profiles (``engines.tensorrt.profiles.derive_profiles``), and
the profiles are repeated once per execution context (``--contexts``, by
default the config's instance count). ``--dry-run`` prints all of that
without TensorRT or a GPU.

Exit status: 0 built (or dry run), 2 bad arguments or the build failed.
Errors print one ``error: ...`` line.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from inferd.engines.base import EngineError
from inferd.engines.tensorrt.build_spec import (
    PRECISIONS,
    BuildError,
    BuildSpec,
    format_shape,
    input_profiles,
    read_onnx_inputs,
)
from inferd.engines.tensorrt.calibration import CalibrationSet
from inferd.engines.tensorrt.profiles import (
    DEFAULT_MAX_PROFILES,
    MAX_PROFILES,
    allowed_batch_sizes,
    derive_profiles,
)

#: The repository's auto-complete default (server.models.ModelManager).
DEFAULT_MAX_BATCH = 64
_MAX_BATCH_LIMIT = 1 << 16
_SHAPE = re.compile(r"[1-9][0-9]{0,8}(x[1-9][0-9]{0,8})*", re.ASCII)


class UsageError(Exception):
    pass


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="inferd build-engine",
        description="Build a TensorRT plan (model.plan + model.plan.json) from an ONNX model, "
        "with optimization profiles for the batch sizes the server will dispatch.",
    )
    p.add_argument("model", type=Path, help="the ONNX model")
    p.add_argument("-o", "--output", type=Path, required=True, help="the plan file to write")
    p.add_argument(
        "--precision", choices=PRECISIONS, default="fp32", help="kernel precision (default fp32)"
    )
    p.add_argument("--workspace-mb", type=int, help="largest scratch memory TensorRT may use, MiB")
    sizes = p.add_mutually_exclusive_group()
    sizes.add_argument("--batch-sizes", help="comma-separated batch sizes, e.g. 1,2,4,8,16")
    sizes.add_argument(
        "--max-batch-size", type=int, help=f"every size 1..N (default {DEFAULT_MAX_BATCH})"
    )
    p.add_argument(
        "--config",
        type=Path,
        help="the model's config.pbtxt: max_batch_size, preferred_batch_size and the "
        "instance count (for --contexts) come from it",
    )
    p.add_argument(
        "--max-profiles",
        type=int,
        default=DEFAULT_MAX_PROFILES,
        help=f"profiles per context (default {DEFAULT_MAX_PROFILES}); more: faster odd sizes, "
        "slower builds, larger plans",
    )
    p.add_argument(
        "--exact-profiles",
        action="store_true",
        help="one point profile per batch size (the server pads other sizes up)",
    )
    p.add_argument(
        "--contexts",
        type=int,
        help="execution contexts the plan supports at once (default: the config's "
        "instance count, else 1); each needs its own copy of the profiles",
    )
    p.add_argument(
        "--input-shape",
        action="append",
        default=[],
        metavar="NAME=DxD",
        help="sizes for dynamic dimensions other than the batch (after the batch for a "
        "batched input, e.g. tokens=128)",
    )
    p.add_argument(
        "--calibration-data",
        action="append",
        default=[],
        metavar="NAME=FILE.npy",
        help="int8: calibration samples for one input (samples along the first axis)",
    )
    p.add_argument(
        "--calibration-batch", type=int, default=8, help="int8: samples per calibration batch"
    )
    p.add_argument(
        "--calibration-cache", type=Path, help="int8: reuse/write the calibration table here"
    )
    p.add_argument("--device", type=int, default=0, help="the GPU to build on (default 0)")
    p.add_argument(
        "--dry-run", action="store_true", help="print the profiles and exit (no TensorRT needed)"
    )
    p.add_argument("--force", action="store_true", help="overwrite an existing plan")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    return p


def _batch_sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UsageError(f"--batch-sizes must be comma-separated integers, not '{text}'") from None
    if not sizes or any(not 1 <= s <= _MAX_BATCH_LIMIT for s in sizes):
        raise UsageError(f"--batch-sizes must be integers between 1 and {_MAX_BATCH_LIMIT}")
    return sizes


def _pairs(option: str, values: Sequence[str]) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep or not name or not rest:
            raise UsageError(f"{option} takes NAME=VALUE, not '{value}'")
        if name in pairs:
            raise UsageError(f"{option} gives '{name}' twice")
        pairs[name] = rest
    return pairs


def _shapes(values: Sequence[str]) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for name, text in _pairs("--input-shape", values).items():
        if not _SHAPE.fullmatch(text):
            raise UsageError(f"--input-shape {name}= takes sizes like 3x224x224, not '{text}'")
        shapes[name] = tuple(int(d) for d in text.split("x"))
    return shapes


def _from_config(path: Path) -> tuple[int, tuple[int, ...], int]:
    """(max_batch_size, preferred sizes, instance count) from a config.pbtxt."""
    from google.protobuf import text_format

    from inferd.protos import model_config_pb2

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read --config: {exc.strerror}") from None
    config = model_config_pb2.ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        raise UsageError(f"cannot parse --config: {exc}") from None
    count = sum(group.count or 1 for group in config.instance_group) or 1
    preferred = tuple(config.dynamic_batching.preferred_batch_size)
    return config.max_batch_size, preferred, count


def spec_from_args(opts: argparse.Namespace) -> tuple[BuildSpec, tuple[int, ...]]:
    """The build the arguments ask for, checked, and the scheduler's sizes."""
    if opts.workspace_mb is not None and opts.workspace_mb < 1:
        raise UsageError("--workspace-mb must be at least 1")
    if not 1 <= opts.max_profiles <= MAX_PROFILES:
        raise UsageError(f"--max-profiles must be between 1 and {MAX_PROFILES}")
    if opts.contexts is not None and not 1 <= opts.contexts <= 64:
        raise UsageError("--contexts must be between 1 and 64")
    if opts.calibration_batch < 1:
        raise UsageError("--calibration-batch must be at least 1")
    if opts.device < 0:
        raise UsageError("--device must not be negative")
    if opts.max_batch_size is not None and not 1 <= opts.max_batch_size <= _MAX_BATCH_LIMIT:
        raise UsageError(f"--max-batch-size must be between 1 and {_MAX_BATCH_LIMIT}")
    if not opts.model.is_file():
        raise UsageError("the ONNX model does not exist or is not a file")
    output: Path = opts.output
    if output.exists() and not opts.force and not opts.dry_run:
        raise UsageError(f"{output} exists (--force overwrites it)")
    if output.resolve() == opts.model.resolve():
        raise UsageError("the output would overwrite the ONNX model")
    if not output.parent.is_dir():
        raise UsageError(f"the output directory {output.parent} does not exist")

    preferred: tuple[int, ...] = ()
    contexts = opts.contexts
    config_max = 0
    if opts.config is not None:
        config_max, preferred, count = _from_config(opts.config)
        contexts = contexts or count
    if opts.batch_sizes is not None:
        sizes = _batch_sizes(opts.batch_sizes)
    else:
        largest = opts.max_batch_size or config_max or DEFAULT_MAX_BATCH
        sizes = list(range(1, largest + 1))
    try:
        profiles = derive_profiles(
            sizes, max_profiles=opts.max_profiles, exact=opts.exact_profiles, preferred=preferred
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    calibration = {
        name: Path(file)
        for name, file in _pairs("--calibration-data", opts.calibration_data).items()
    }
    spec = BuildSpec(
        onnx_path=opts.model,
        plan_path=output,
        batch_profiles=profiles,
        precision=opts.precision,
        workspace_bytes=opts.workspace_mb << 20 if opts.workspace_mb else None,
        contexts=contexts or 1,
        input_shapes=_shapes(opts.input_shape),
        calibration_files=calibration,
        calibration_batch=opts.calibration_batch,
        calibration_cache=opts.calibration_cache,
        device_id=opts.device,
    )
    return spec, tuple(sorted(set(sizes)))


def describe(spec: BuildSpec, out: TextIO) -> None:
    """What will be built: profiles per input and the sizes the server dispatches."""
    inputs = read_onnx_inputs(spec.onnx_path)
    profiles = input_profiles(inputs, spec.batch_profiles, spec.input_shapes)
    print(f"model: {spec.onnx_path.name}, precision {spec.precision}", file=out)
    for inp in inputs:
        print(f"  input {inp.name}: {inp.dtype} [{', '.join(map(str, inp.dims))}]", file=out)
    if not profiles:
        print("static shapes: no optimization profiles", file=out)
    else:
        print(
            f"{len(profiles)} profile(s) per context x {spec.contexts} context(s) "
            f"= {len(profiles) * spec.contexts} in the plan:",
            file=out,
        )
        for i, profile in enumerate(profiles):
            shown = "; ".join(
                f"{name} {format_shape(lo)} / {format_shape(opt)} / {format_shape(hi)}"
                for name, (lo, opt, hi) in profile.items()
            )
            print(f"  [{i}] min / opt / max: {shown}", file=out)
        if any(inp.batched for inp in inputs):
            allowed = allowed_batch_sizes(spec.batch_profiles)
            print(f"batch sizes the server will dispatch: {_ranges(allowed)}", file=out)
    if spec.precision == "int8":
        data = CalibrationSet(
            spec.calibration_files, inputs, spec.calibration_batch, spec.input_shapes
        )
        print(
            f"calibration: {data.samples} samples in {data.batches} batch(es) of {data.batch_size}",
            file=out,
        )


def _ranges(sizes: Sequence[int]) -> str:
    """(1, 2, 3, 8) -> '1..3, 8'."""
    parts: list[str] = []
    start = prev = None
    for s in (*sizes, None):
        if s is not None and prev is not None and s == prev + 1:
            prev = s
            continue
        if start is not None:
            parts.append(str(start) if start == prev else f"{start}..{prev}")
        start = prev = s
    return ", ".join(parts)


class ProgressDisplay:
    """Build progress on a terminal (one line, rewritten) or in a log (one
    line per phase start and end). Nested TensorRT phases show as a path."""

    def __init__(self, out: TextIO, *, quiet: bool = False) -> None:
        self.out = out
        self.quiet = quiet
        self.tty = out.isatty()
        self.stack: list[tuple[str, int, float]] = []
        self.started = time.monotonic()
        self._last = 0.0

    def _elapsed(self) -> str:
        return f"{time.monotonic() - self.started:6.1f}s"

    def phase_start(self, name: str, parent: str | None, steps: int) -> None:
        self.stack.append((name, steps, time.monotonic()))
        if self.quiet:
            return
        if self.tty:
            self._line(f"{name} ...")
        elif len(self.stack) <= 2:
            print(f"[{self._elapsed()}] {'  ' * (len(self.stack) - 1)}{name}", file=self.out)

    def step(self, name: str, step: int) -> bool:
        if self.quiet or not self.tty:
            return True
        now = time.monotonic()
        if now - self._last < 0.1:
            return True
        self._last = now
        steps = next((n for phase, n, _ in reversed(self.stack) if phase == name), 0)
        where = " > ".join(phase for phase, _, _ in self.stack[-2:])
        self._line(f"{where} {step + 1}/{steps}" if steps else where)
        return True

    def phase_finish(self, name: str) -> None:
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i][0] == name:
                _, _, began = self.stack.pop(i)
                break
        else:
            return
        if self.quiet:
            return
        took = time.monotonic() - began
        if self.tty:
            if not self.stack:
                self._line(f"{name}: done in {took:.1f}s", end="\n")
        elif len(self.stack) <= 1:
            print(f"[{self._elapsed()}] {'  ' * len(self.stack)}{name}: {took:.1f}s", file=self.out)

    def _line(self, text: str, end: str = "") -> None:
        width = 100
        self.out.write("\r" + f"[{self._elapsed()}] {text}"[:width].ljust(width) + end)
        self.out.flush()


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    opts = parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        spec, _ = spec_from_args(opts)
        if opts.dry_run:
            describe(spec, out)
            return 0
        from inferd.engines.tensorrt.build import build_plan

        info = build_plan(spec, ProgressDisplay(sys.stderr, quiet=opts.quiet))
    except (UsageError, BuildError, EngineError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 2
    profiles = ", ".join(p.describe() for p in info.batch_profiles) or "static shapes"
    print(
        f"wrote {spec.plan_path} ({info.plan_bytes / 2**20:.1f} MiB, {info.precision}, "
        f"TensorRT {info.tensorrt_version}, {info.device_name} sm_"
        f"{info.compute_capability[0]}{info.compute_capability[1]}); "
        f"profiles {profiles} x {info.contexts} context(s)",
        file=out,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
