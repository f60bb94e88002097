"""Minimal stand-ins for the ``tensorrt`` and ``pycuda.driver`` modules.

They exist ONLY because TensorRT and CUDA cannot run where this suite was
written (no GPU): they let the CPU tests drive ``engines/tensorrt/``'s
control flow (load order, error paths, profile ownership per execution
context, buffer management, release on close). They model just the calls
inferd makes, plus the documented TensorRT rules inferd must obey, checked
loudly:

* execution contexts with dynamic shapes must not hold the same
  optimization profile while running (``execute_async_v3`` fails if two do);
* every input shape is set, and every I/O tensor has an address, before
  ``execute_async_v3``;
* an input shape outside the selected profile is refused
  (``set_input_shape`` returns False).

The "network" computes ``y = 2 * x`` for every input ``x`` / output ``y``
pair (outputs take the shape of the input at the same position), so results
can be checked. Nothing here says anything about real TensorRT numerics or
speed: ``tests/gpu`` covers those on a GPU.

A fake plan is ``PLAN_MAGIC`` + JSON ``{"inputs": [[name, dtype, shape]],
"outputs": [...], "profiles": [{name: [min, opt, max]}]}``; anything else
fails to deserialize with a logged error.
"""

from __future__ import annotations

import json
import time
import types
from typing import Any

import numpy as np

PLAN_MAGIC = b"FAKEPLAN"


class _Enum:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"


def _enum(*names: str) -> Any:
    return types.SimpleNamespace(**{n: _Enum(n) for n in names})


def make_plan(
    inputs: list[tuple[str, str, list[int]]],
    outputs: list[tuple[str, str, list[int]]],
    profiles: list[dict[str, list[list[int]]]] = (),  # type: ignore[assignment]
) -> bytes:
    body = {"inputs": inputs, "outputs": outputs, "profiles": list(profiles)}
    return PLAN_MAGIC + json.dumps(body).encode()


# --------------------------------------------------------------------------- tensorrt


def make_tensorrt(version: str = "10.3.0", memory: Any = None) -> types.ModuleType:
    """``memory``: where the "network" reads its inputs and writes its outputs
    (``read(address, nbytes) -> bytes``, ``write(address, data)``); by default
    the fake pycuda's ``MEMORY``. A GPU test passes real device memory."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version  # type: ignore[attr-defined]
    trt.DataType = _enum("FLOAT", "HALF", "INT8", "INT32", "INT64", "BOOL", "UINT8", "FP8")  # type: ignore[attr-defined]
    trt.TensorIOMode = _enum("NONE", "INPUT", "OUTPUT")  # type: ignore[attr-defined]
    trt.TensorLocation = _enum("DEVICE", "HOST")  # type: ignore[attr-defined]
    severity = _enum("INTERNAL_ERROR", "ERROR", "WARNING", "INFO", "VERBOSE")

    class ILogger:
        Severity = severity

        def __init__(self) -> None:
            pass

    class Runtime:
        deserialized = 0

        def __init__(self, logger: Any) -> None:
            self.logger = logger

        def deserialize_cuda_engine(self, data: bytes) -> Any:
            Runtime.deserialized += 1
            if not bytes(data).startswith(PLAN_MAGIC):
                self.logger.log(
                    severity.ERROR,
                    "IRuntime::deserializeCudaEngine: Error Code 1: Serialization "
                    "(/opt/trt/src/runtime.cpp:42 magic tag does not match) reading "
                    "/srv/models/m/1/model.plan",
                )
                return None
            body = json.loads(bytes(data)[len(PLAN_MAGIC) :])
            return FakeEngine(trt, body, memory)

    trt.ILogger = ILogger  # type: ignore[attr-defined]
    trt.Runtime = Runtime  # type: ignore[attr-defined]
    return trt


class FakeEngine:
    def __init__(self, trt: Any, body: dict[str, Any], memory: Any = None) -> None:
        self.trt = trt
        self.memory = memory or FakeMemory()
        self.inputs = [(n, d, tuple(s)) for n, d, s in body["inputs"]]
        self.outputs = [(n, d, tuple(s)) for n, d, s in body["outputs"]]
        self.profiles = [
            {name: tuple(tuple(s) for s in shapes) for name, shapes in p.items()}
            for p in body["profiles"]
        ]
        self.contexts: list[FakeContext] = []

    def _tensor(self, name: str) -> tuple[str, str, tuple[int, ...], bool]:
        for n, d, s in self.inputs:
            if n == name:
                return n, d, s, True
        for n, d, s in self.outputs:
            if n == name:
                return n, d, s, False
        raise KeyError(name)

    @property
    def num_io_tensors(self) -> int:
        return len(self.inputs) + len(self.outputs)

    def get_tensor_name(self, i: int) -> str:
        return [t[0] for t in (*self.inputs, *self.outputs)][i]

    def get_tensor_mode(self, name: str) -> Any:
        modes = self.trt.TensorIOMode
        return modes.INPUT if self._tensor(name)[3] else modes.OUTPUT

    def get_tensor_dtype(self, name: str) -> Any:
        return getattr(self.trt.DataType, self._tensor(name)[1])

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return self._tensor(name)[2]

    def get_tensor_location(self, name: str) -> Any:
        return self.trt.TensorLocation.DEVICE

    @property
    def num_optimization_profiles(self) -> int:
        return max(1, len(self.profiles))

    def get_tensor_profile_shape(self, name: str, index: int) -> list[tuple[int, ...]]:
        return list(self.profiles[index][name])

    def create_execution_context(self) -> FakeContext:
        context = FakeContext(self)
        self.contexts.append(context)
        return context


class FakeContext:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine
        self.profile = 0
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.addresses: dict[str, int] = {}
        self.profiles_used: set[int] = set()
        #: Shape of the first input at each run.
        self.ran: list[tuple[int, ...]] = []

    @property
    def dynamic(self) -> bool:
        return any(-1 in s for _, _, s in self.engine.inputs)

    def set_optimization_profile_async(self, index: int, stream: int) -> bool:
        if not 0 <= index < len(self.engine.profiles):
            return False
        self.profile = index
        self.shapes.clear()
        return True

    def set_input_shape(self, name: str, shape: Any) -> bool:
        shape = tuple(int(d) for d in shape)
        low, _, high = self.engine.profiles[self.profile][name]
        if len(shape) != len(low) or any(
            not lo <= s <= hi for lo, s, hi in zip(low, shape, high, strict=True)
        ):
            return False
        self.shapes[name] = shape
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        _, _, static, is_input = self.engine._tensor(name)
        if is_input:
            return self.shapes.get(name, static)
        position = [n for n, _, _ in self.engine.outputs].index(name)
        source = self.engine.inputs[position][0]
        return self.shapes.get(source, self.engine.inputs[position][2])

    def set_tensor_address(self, name: str, address: int) -> bool:
        self.addresses[name] = int(address)
        return True

    def execute_async_v3(self, stream: int) -> bool:
        engine = self.engine
        names = [t[0] for t in (*engine.inputs, *engine.outputs)]
        assert set(self.addresses) >= set(names), "every I/O tensor needs an address"
        if self.dynamic:
            assert all(n in self.shapes for n, _, s in engine.inputs if -1 in s), (
                "input shapes must be set before enqueue"
            )
            # TensorRT: contexts in use must hold different profiles.
            others = [c for c in engine.contexts if c is not self]
            assert all(c.profile != self.profile for c in others), (
                "two execution contexts hold the same optimization profile"
            )
        self.running = True
        try:
            for (name, dtype, _), (out, _, _) in zip(engine.inputs, engine.outputs, strict=False):
                shape = self.get_tensor_shape(name)
                np_dtype = {"FLOAT": np.float32, "HALF": np.float16, "INT32": np.int32}[dtype]
                nbytes = int(np.prod(shape)) * np.dtype(np_dtype).itemsize
                x = np.frombuffer(engine.memory.read(self.addresses[name], nbytes), np_dtype)
                y = (x * 2).astype(np_dtype)
                engine.memory.write(self.addresses[out], y.tobytes())
        finally:
            self.running = False
        self.profiles_used.add(self.profile)
        self.ran.append(self.get_tensor_shape(engine.inputs[0][0]))
        return True

    running = False


# --------------------------------------------------------------------------- pycuda.driver

MEMORY: dict[int, bytearray] = {}


class FakeMemory:
    """The fake pycuda's device memory, as the fake network reads it."""

    def read(self, address: int, nbytes: int) -> bytes:
        return bytes(MEMORY[address][:nbytes])

    def write(self, address: int, data: bytes) -> None:
        MEMORY[address][: len(data)] = data


def make_pycuda(
    gpus: int = 1, capability: tuple[int, int] = (8, 9), name: str = "Fake L4"
) -> tuple[types.ModuleType, types.ModuleType]:
    """(``pycuda`` package, ``pycuda.driver``)."""
    driver = types.ModuleType("pycuda.driver")
    state = types.SimpleNamespace(next_address=4096, pushed=0, retained=0, live=set())

    class Device:
        def __init__(self, index: int) -> None:
            self.index = index

        @staticmethod
        def count() -> int:
            return gpus

        def name(self) -> str:
            return name

        def compute_capability(self) -> tuple[int, int]:
            return capability

        def retain_primary_context(self) -> Any:
            state.retained += 1
            return PrimaryContext()

    class PrimaryContext:
        def push(self) -> None:
            state.pushed += 1

        def detach(self) -> None:
            state.retained -= 1

    class Context:
        @staticmethod
        def pop() -> None:
            state.pushed -= 1

    class Stream:
        def __init__(self) -> None:
            self.handle = id(self)

        def synchronize(self) -> None:
            time.sleep(0.0005)  # waiting for the GPU releases the GIL, as pycuda's does

    class Allocation:
        def __init__(self, nbytes: int) -> None:
            assert state.pushed > 0, "CUDA calls need a current context"
            self.address = state.next_address
            state.next_address += nbytes + 256
            MEMORY[self.address] = bytearray(nbytes)
            state.live.add(self.address)

        def __int__(self) -> int:
            return self.address

        def free(self) -> None:
            state.live.discard(self.address)
            MEMORY.pop(self.address, None)

    def memcpy_htod_async(dest: Any, src: np.ndarray, stream: Any) -> None:
        data = np.ascontiguousarray(src).tobytes()
        MEMORY[int(dest)][: len(data)] = data

    def memcpy_dtoh_async(dest: np.ndarray, src: Any, stream: Any) -> None:
        view = dest.view(np.uint8).reshape(-1)
        view[:] = np.frombuffer(bytes(MEMORY[int(src)][: view.size]), np.uint8)

    driver.init = lambda: None  # type: ignore[attr-defined]
    driver.Device = Device  # type: ignore[attr-defined]
    driver.Context = Context  # type: ignore[attr-defined]
    driver.Stream = Stream  # type: ignore[attr-defined]
    driver.mem_alloc = Allocation  # type: ignore[attr-defined]
    driver.pagelocked_empty = lambda shape, dtype: np.zeros(shape, dtype)  # type: ignore[attr-defined]
    driver.memcpy_htod_async = memcpy_htod_async  # type: ignore[attr-defined]
    driver.memcpy_dtoh_async = memcpy_dtoh_async  # type: ignore[attr-defined]
    driver.state = state  # type: ignore[attr-defined]
    package = types.ModuleType("pycuda")
    package.driver = driver  # type: ignore[attr-defined]
    return package, driver
