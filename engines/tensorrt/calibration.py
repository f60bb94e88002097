"""INT8 calibration: the sample inputs (``CalibrationSet``, plain numpy, no
GPU) and TensorRT's entropy calibrator (``IInt8EntropyCalibrator2``) that
feeds them from device buffers. Samples come as ``.npy`` files, one per
input, samples along the first axis. TensorRT 10 deprecates
implicit-quantization calibration in favour of QDQ models; it still works in
10.x."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from inferd.engines.tensorrt.build_spec import BuildError, ModelInput
from inferd.engines.tensorrt.plan import write_atomically

#: The former module's name, kept so that log filters and dashboards still match.
log = logging.getLogger("inferd.engines.trt_build")


class CalibrationSet:
    """INT8 calibration samples: one ``.npy`` file per model input, samples
    along the first axis, read memory-mapped and handed out ``batch_size``
    samples at a time (a remainder smaller than a batch is dropped)."""

    def __init__(
        self,
        files: Mapping[str, Path],
        inputs: Sequence[ModelInput],
        batch_size: int,
        shapes: Mapping[str, Sequence[int]] | None = None,
    ) -> None:
        if batch_size < 1:
            raise BuildError("--calibration-batch must be at least 1")
        names = [i.name for i in inputs]
        missing = [n for n in names if n not in files]
        extra = [n for n in files if n not in names]
        if extra:
            raise BuildError(f"--calibration-data names '{extra[0]}', which is not an input")
        if missing:
            raise BuildError(
                f"--calibration-data has no samples for input '{missing[0]}' "
                "(every input needs a file)"
            )
        shapes = dict(shapes or {})
        if batch_size != 1 and not all(i.batched for i in inputs):
            raise BuildError(
                "inputs without a dynamic batch dimension take one sample (a whole input) "
                "per calibration batch: use --calibration-batch 1"
            )
        self.batch_size = batch_size
        self.arrays: dict[str, np.ndarray] = {}
        counts: set[int] = set()
        for inp in inputs:
            array = _load_npy(inp.name, files[inp.name])
            expected = inp.dims[1:] if inp.batched else inp.dims
            if inp.name in shapes and -1 in expected:
                expected = tuple(shapes[inp.name])
            sample = array.shape[1:]
            if array.ndim != len(expected) + 1 or any(
                e != -1 and s != e for s, e in zip(sample, expected, strict=True)
            ):
                raise BuildError(
                    f"calibration samples for '{inp.name}' have shape {list(array.shape)}; "
                    f"expected [samples, {', '.join(str(e) for e in expected)}]"
                )
            if not np.can_cast(array.dtype, inp.dtype, casting="same_kind"):
                raise BuildError(
                    f"calibration samples for '{inp.name}' are {array.dtype}, "
                    f"the input is {inp.dtype}"
                )
            self.arrays[inp.name] = array
            counts.add(int(array.shape[0]))
        if len(counts) != 1:
            raise BuildError("the calibration files hold different numbers of samples")
        (self.samples,) = counts
        if self.samples < batch_size:
            raise BuildError(
                f"{self.samples} calibration samples are fewer than one batch of {batch_size}"
            )
        self.dtypes = {i.name: i.dtype for i in inputs}

    @property
    def batches(self) -> int:
        return self.samples // self.batch_size

    def batch_nbytes(self, name: str) -> int:
        array = self.arrays[name]
        return self.batch_size * math.prod(array.shape[1:]) * self.dtypes[name].itemsize

    def batch_shape(self, name: str) -> tuple[int, ...]:
        return (self.batch_size, *self.arrays[name].shape[1:])

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for b in range(self.batches):
            lo, hi = b * self.batch_size, (b + 1) * self.batch_size
            yield {
                name: np.ascontiguousarray(array[lo:hi], dtype=self.dtypes[name])
                for name, array in self.arrays.items()
            }


def _load_npy(name: str, path: Path) -> np.ndarray:
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise BuildError(f"the calibration file for '{name}' does not exist") from None
    except (OSError, ValueError) as exc:
        raise BuildError(f"the calibration file for '{name}' is not a .npy array: {exc}") from None
    if not isinstance(array, np.ndarray) or array.ndim < 1:
        raise BuildError(f"the calibration file for '{name}' must hold an array of samples")
    return array


def make_calibrator(trt: Any, cuda: Any, data: CalibrationSet, cache: Path | None) -> Any:
    """An ``IInt8EntropyCalibrator2`` feeding ``data`` from device buffers."""

    class Calibrator(trt.IInt8EntropyCalibrator2):  # type: ignore[misc]
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.batches = iter(data)
            self.device = {name: cuda.mem_alloc(data.batch_nbytes(name)) for name in data.arrays}
            self.done = 0

        def get_batch_size(self) -> int:
            # Explicit-batch networks (the only kind in TensorRT 10): the batch is
            # part of the input shape (the calibration profile); TensorRT multiplies
            # by this value, so it must be 1.
            return 1

        def get_batch(self, names: Sequence[str], *args: Any) -> list[int] | None:
            try:
                batch = next(self.batches)
            except StopIteration:
                return None
            for name in names:
                cuda.memcpy_htod(self.device[name], batch[name])
            self.done += 1
            return [int(self.device[name]) for name in names]

        def read_calibration_cache(self, *args: Any) -> bytes | None:
            if cache is not None and cache.is_file():
                log.info("using the INT8 calibration cache (delete it to recalibrate)")
                return cache.read_bytes()
            return None

        def write_calibration_cache(self, blob: Any, *args: Any) -> None:
            if cache is not None:
                write_atomically(cache, bytes(blob))

        def free(self) -> None:
            for allocation in self.device.values():
                allocation.free()
            self.device.clear()

    return Calibrator()
