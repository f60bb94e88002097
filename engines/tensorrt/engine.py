"""TensorRT engine: serve a serialized plan (``<version>/model.plan``) on one
GPU through the TensorRT 10 Python API and pycuda.

``tensorrt`` and ``pycuda`` are imported when a plan is loaded, never at
module import, so the server runs (and this module imports) without them; a
``tensorrt_plan`` model then fails to load with a message saying what is
missing.

Load, in order (each step's failure is an ``EngineError`` safe to show a
caller: no paths, TensorRT's text scrubbed):

1. read the plan file; read and check its sidecar (``model.plan.json``, see
   ``engines.tensorrt.plan``): the SHA-256 must match the plan;
2. import TensorRT (10 or later) and pycuda, open the GPU named by
   ``EngineOptions.device_id`` (its primary CUDA context, shared with
   TensorRT's runtime API use);
3. refuse a plan whose sidecar names another TensorRT release or another
   compute capability; ask TensorRT (``get_engine_validity``, where this
   release has it) and then deserialize, reporting TensorRT's logged error
   when it returns None;
4. read the layout (tensors, profiles), create the execution contexts.

Execution contexts: one per execution slot (``max_concurrency``), each with
its own CUDA stream and its own device and page-locked host buffers, sized
for the largest shapes of its profiles (grown if a call needs more). A call
takes a free context, selects the profile for its shapes (among the
context's own profiles, see ``engines.tensorrt.profiles``), sets the input shapes,
copies inputs host -> pinned -> device asynchronously, enqueues with
``execute_async_v3``, copies the outputs back asynchronously and synchronizes
its stream. Contexts never share a profile, as TensorRT requires for
concurrent use with dynamic shapes; a plan with static shapes runs as many
contexts as configured.

``close`` waits for running calls, then frees buffers, streams, contexts, the
engine and the runtime, and releases the CUDA context: device memory returns
to the pool before ``close`` returns.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from inferd.engines.base import Engine, EngineError, EngineInputError, EngineOptions, Signature
from inferd.engines.messages import clean_message
from inferd.engines.tensorrt.deserialize import check_validity, deserialize, read_plan
from inferd.engines.tensorrt.execution_slot import ExecutionSlot
from inferd.engines.tensorrt.plan import (
    PLAN_ERROR,
    PlanLayout,
    check_compatibility,
    check_digest,
    read_layout,
    read_sidecar,
    volume,
)
from inferd.engines.tensorrt.profiles import pick_profile
from inferd.engines.tensorrt.runtime import CudaDevice, TrtLogger, import_cuda, import_tensorrt

log = logging.getLogger("inferd.engines.tensorrt")


class TensorRTEngine(Engine):
    """A TensorRT plan deserialized on one GPU."""

    def __init__(self, path: Path, options: EngineOptions) -> None:
        path = Path(path)
        self._scrub = (str(path), str(path.resolve()), str(path.parent), str(path.parent.resolve()))
        self._cond = threading.Condition()
        self._closed = False
        self._busy = 0
        self._slots: list[ExecutionSlot] = []
        self._free: list[ExecutionSlot] = []
        self._engine: Any = None
        self._runtime: Any = None
        self._device: CudaDevice | None = None

        data = read_plan(path)
        info = read_sidecar(path)
        if info is not None:
            check_digest(info, data)
        trt = import_tensorrt()
        cuda = import_cuda()
        self._trt, self._cuda = trt, cuda
        self._logger = TrtLogger.get(trt)
        try:
            self._device = CudaDevice(cuda, options.device_id)
            with self._device.active():
                if info is not None:
                    for warning in check_compatibility(
                        info,
                        str(trt.__version__),
                        self._device.compute_capability,
                        self._device.name,
                        self._device.id,
                    ):
                        log.warning("%s", warning)
                else:
                    log.info("plan has no sidecar; relying on TensorRT's own compatibility checks")
                self._runtime = trt.Runtime(self._logger)
                check_validity(trt, self._runtime, data)
                self._engine = deserialize(self._runtime, self._logger, data, self._clean)
                del data
                self._layout = read_layout(self._engine, trt)
                self._signature = self._layout.signature()
                for index in range(self._context_count(options.concurrency)):
                    self._slots.append(self._make_slot(index))
        except BaseException as exc:
            self._release_all()
            if isinstance(exc, EngineError) or not isinstance(exc, Exception):
                raise
            raise EngineError(f"{PLAN_ERROR}: {self._clean(str(exc))}") from exc
        self._free = list(self._slots)
        self.max_concurrency = len(self._slots)
        self._inputs = {t.name: t for t in self._layout.inputs}
        self._outputs = {t.name: t for t in self._layout.outputs}
        self._bounds = self._layout.dim_bounds()
        log.info(
            "TensorRT %s plan on GPU %d (%s): %s, %d execution context(s)",
            trt.__version__,
            self._device.id,
            self._device.name,
            self._layout.describe(),
            len(self._slots),
        )

    # -- load helpers --------------------------------------------------------------------

    def _clean(self, text: str) -> str:
        return clean_message(text, self._scrub)

    def _context_count(self, wanted: int) -> int:
        wanted = max(1, wanted)
        replicas = self._layout.replicas
        if replicas and wanted > replicas:
            log.warning(
                "%d execution contexts were asked for, but the plan has optimization profiles "
                "for %d (contexts used at once need profiles of their own); running %d. "
                "Rebuild with 'inferd build-engine --contexts %d' for more.",
                wanted,
                replicas,
                replicas,
                wanted,
            )
            return replicas
        return wanted

    def _make_slot(self, index: int) -> ExecutionSlot:
        cuda = self._cuda
        context = self._engine.create_execution_context()
        if context is None:
            said = self._logger.take()
            raise EngineError(
                f"{PLAN_ERROR}: TensorRT could not create execution context {index + 1}"
                + (f": {self._clean(said)}" if said else " (out of GPU memory?)")
            )
        slot = ExecutionSlot(index, context, cuda.Stream(), self._layout.group(index))
        try:
            for name, nbytes in self._largest_sizes(slot).items():
                slot.buffer(cuda, name, nbytes)
        except BaseException:
            slot.free()
            raise
        return slot

    def _largest_sizes(self, slot: ExecutionSlot) -> dict[str, int]:
        """Bytes per tensor at the largest shapes of the slot's profiles
        (the only shapes with static plans)."""
        layout = self._layout
        sizes: dict[str, int] = {}
        tensors = (*layout.inputs, *layout.outputs)
        for index in slot.profiles if layout.dynamic else (None,):
            if index is not None:
                slot.select_profile(index)
                for name, (_, _, high) in layout.profiles[index].items():
                    if not slot.context.set_input_shape(name, high):
                        raise EngineError(f"{PLAN_ERROR}: profile {index} rejects its own shapes")
            for t in tensors:
                shape = tuple(int(d) for d in slot.context.get_tensor_shape(t.name))
                if any(d < 0 for d in shape):
                    raise EngineError(
                        f"{PLAN_ERROR}: output '{t.name}' has a data-dependent shape, which "
                        "this server does not support"
                    )
                sizes[t.name] = max(sizes.get(t.name, 0), volume(shape) * t.dtype.itemsize)
        slot.stream.synchronize()
        return sizes

    # -- Engine API ----------------------------------------------------------------------

    @property
    def signature(self) -> Signature:
        return self._signature

    @property
    def layout(self) -> PlanLayout:
        return self._layout

    @property
    def slot_calls(self) -> tuple[int, ...]:
        """Calls run so far on each execution context."""
        return tuple(s.calls for s in self._slots)

    def check_request(self, inputs: Mapping[str, np.ndarray]) -> None:
        """Refuse a request whose non-batch dimensions lie outside every
        profile, before it is merged into a batch with others."""
        skip_first = self._layout.batched
        for name, bounds in self._bounds.items():
            array = inputs.get(name)
            if array is None or array.ndim != len(bounds):
                continue
            for axis, (low, high) in enumerate(bounds):
                if axis == 0 and skip_first:
                    continue
                size = array.shape[axis]
                if not low <= size <= high:
                    raise EngineInputError(
                        f"input '{name}' dimension {axis} is {size}; this TensorRT plan runs "
                        f"{low}..{high} (its optimization profiles)"
                    )

    def infer(
        self,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[str] | None = None,
    ) -> dict[str, np.ndarray]:
        if self._closed:
            raise EngineError("the model has been unloaded")
        names = list(self._outputs) if outputs is None else list(dict.fromkeys(outputs))
        for name in names:
            if name not in self._outputs:
                raise EngineError(f"unknown output '{name}'")
        arrays = self._prepare(inputs)
        if not names:
            return {}
        slot = self._acquire()
        try:
            assert self._device is not None
            with self._device.active():
                return self._run(slot, arrays, names)
        except EngineError:
            raise
        except Exception as exc:
            said = self._logger.take() or str(exc)
            raise EngineError(f"inference failed: {self._clean(said)}") from exc
        finally:
            self._release(slot)

    def _prepare(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        unknown = [n for n in inputs if n not in self._inputs]
        if unknown:
            raise EngineError(f"unknown input '{unknown[0]}'")
        arrays: dict[str, np.ndarray] = {}
        for name, spec in self._inputs.items():
            if name not in inputs:
                raise EngineError(f"missing input '{name}'")
            array = np.asarray(inputs[name])
            if array.dtype != spec.dtype:
                if array.dtype.newbyteorder("=") != spec.dtype.newbyteorder("="):
                    raise EngineError(
                        f"input '{name}' has dtype {array.dtype}, expected {spec.dtype}"
                    )
                array = array.astype(spec.dtype)
            if array.ndim != len(spec.shape) or any(
                want != -1 and got != want
                for got, want in zip(array.shape, spec.shape, strict=True)
            ):
                raise EngineError(
                    f"input '{name}' has shape {list(array.shape)}, "
                    f"expected {list(spec.shape)} (-1: any size)"
                )
            arrays[name] = np.ascontiguousarray(array)
        return arrays

    def _run(
        self, slot: ExecutionSlot, arrays: dict[str, np.ndarray], names: list[str]
    ) -> dict[str, np.ndarray]:
        cuda, context, stream = self._cuda, slot.context, slot.stream
        layout = self._layout
        if layout.dynamic:
            shapes = {name: tuple(a.shape) for name, a in arrays.items()}
            local = pick_profile([layout.profiles[i] for i in slot.profiles], shapes)
            if local is None:
                raise EngineError(self._outside_profiles(shapes))
            slot.select_profile(slot.profiles[local])
            for name in layout.profiles[slot.profile]:
                if not context.set_input_shape(name, shapes[name]):
                    said = self._logger.take()
                    raise EngineError(
                        f"input '{name}' shape {list(shapes[name])} does not fit the plan"
                        + (f": {self._clean(said)}" if said else "")
                    )
        out_shapes: dict[str, tuple[int, ...]] = {}
        for t in layout.outputs:
            shape = tuple(int(d) for d in context.get_tensor_shape(t.name))
            if any(d < 0 for d in shape):
                raise EngineError(f"output '{t.name}' has a data-dependent shape")
            out_shapes[t.name] = shape
        item = {name: self._outputs[name].dtype.itemsize for name in out_shapes}
        slot.bind(
            cuda,
            {
                **{name: array.nbytes for name, array in arrays.items()},
                **{name: volume(shape) * item[name] for name, shape in out_shapes.items()},
            },
        )
        slot.copy_inputs(cuda, arrays)
        if not context.execute_async_v3(stream.handle):
            said = self._logger.take()
            stream.synchronize()
            raise EngineError(
                "TensorRT could not run the batch" + (f": {self._clean(said)}" if said else "")
            )
        slot.copy_outputs(cuda, {n: volume(out_shapes[n]) * item[n] for n in names})
        stream.synchronize()
        slot.calls += 1
        return {n: slot.output(n, self._outputs[n].dtype, out_shapes[n]) for n in names}

    def _outside_profiles(self, shapes: Mapping[str, tuple[int, ...]]) -> str:
        layout = self._layout
        if layout.batched:
            first = next(iter(shapes.values()))
            allowed = layout.batch_profiles()
            ranges = ", ".join(f"{p.min}..{p.max}" for p in allowed)
            return f"batch size {first[0]} is outside the plan's optimization profiles ({ranges})"
        return "the input shapes are outside every optimization profile of the plan"

    # -- slots and release ---------------------------------------------------------------

    def _acquire(self) -> ExecutionSlot:
        with self._cond:
            while not self._free and not self._closed:
                self._cond.wait()
            if self._closed:
                raise EngineError("the model has been unloaded")
            self._busy += 1
            return self._free.pop()

    def _release(self, slot: ExecutionSlot) -> None:
        with self._cond:
            self._busy -= 1
            self._free.append(slot)
            self._cond.notify_all()

    def close(self) -> None:
        """Wait for running calls, then free every GPU resource. Idempotent."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
            while self._busy:
                self._cond.wait()
        self._release_all()

    def _release_all(self) -> None:
        device = self._device
        if device is None:
            return
        try:
            with device.active():
                for slot in self._slots:
                    slot.free()
                self._slots.clear()
                self._free.clear()
                # Contexts before the engine, the engine before the runtime.
                self._engine = None
                self._runtime = None
        finally:
            device.release()
            self._device = None
