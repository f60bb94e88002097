"""The engine contract: numpy in, numpy out, no protobuf and no gRPC.

An engine owns one loaded model version on one device. The scheduler calls
``infer`` from an executor thread, possibly from several threads at once when
``max_concurrency`` > 1, so implementations must be thread-safe up to that
number (onnxruntime's ``InferenceSession.run`` and TensorRT execution
contexts are).

Tensors are ``numpy.ndarray``. BYTES tensors are ``dtype=object`` arrays whose
elements are ``bytes``; BF16 uses ``ml_dtypes.bfloat16``.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

#: numpy dtype used for BYTES tensors (elements are ``bytes``).
BYTES_DTYPE = np.dtype(object)


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One input or output as the engine sees it.

    ``shape`` includes the batch dimension when the model has one; ``-1``
    marks a dimension whose size is chosen per call.
    """

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Signature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    #: Batch sizes the engine can run, ascending; empty means any size from 1
    #: to the model's max batch (a dynamic first dimension).
    batch_sizes: tuple[int, ...] = field(default=())

    def input(self, name: str) -> TensorSpec | None:
        return next((t for t in self.inputs if t.name == name), None)

    def output(self, name: str) -> TensorSpec | None:
        return next((t for t in self.outputs if t.name == name), None)


@dataclass(frozen=True, slots=True)
class EngineOptions:
    """Engine settings taken from the model config.

    ``concurrency``: execution slots (Triton ``instance_group.count``).
    ``intra_op_threads`` / ``inter_op_threads``: onnxruntime thread pools; 0
    lets the runtime choose (Triton's ORT backend parameters
    ``intra_op_thread_count`` / ``inter_op_thread_count``).
    ``providers``: execution providers in preference order; empty means CPU.
    ``provider_options``: per-provider settings as ``(provider, ((key,
    value), ...))`` pairs (tuples keep the options hashable), e.g. the
    TensorRT provider's precision from the config's accelerator parameters.
    ``device_id``: the GPU the model runs on (Triton ``instance_group.gpus``).
    ``max_batch_size``: the largest batch the scheduler will dispatch, 0 when
    unknown; GPU engines size their shape ranges from it.
    ``intra_op_spinning``: whether onnxruntime's intra-op threads spin while
    waiting for work (its default); spinning burns a shared host's cores.
    """

    concurrency: int = 1
    intra_op_threads: int = 0
    inter_op_threads: int = 0
    providers: tuple[str, ...] = ()
    provider_options: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()
    device_id: int = 0
    max_batch_size: int = 0
    intra_op_spinning: bool = True

    def options_for(self, provider: str) -> dict[str, str]:
        """The settings given for ``provider`` (empty when none)."""
        for name, pairs in self.provider_options:
            if name == provider:
                return dict(pairs)
        return {}


class EngineError(RuntimeError):
    """The engine could not load or run. The message is safe to show a caller."""


class EngineInputError(EngineError):
    """The inputs are valid for the protocol but this engine cannot take them
    (e.g. non-UTF-8 text for an onnxruntime string tensor): the caller's fault."""


class EngineRequestError(EngineError):
    """One request's (or one batch's) failure with its own status, a gRPC
    status name such as ``"INTERNAL"`` or ``"UNAVAILABLE"``: engines that run
    user code (Python models) answer each request of a batch on its own."""

    def __init__(self, message: str, status: str = "INTERNAL") -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class RequestCall:
    """One request of a batch, for engines that take requests apart
    (``Engine.takes_requests``) instead of one merged batch."""

    inputs: Mapping[str, np.ndarray]
    #: Output names the caller asked for; empty means all.
    outputs: tuple[str, ...]
    #: ``time.monotonic()`` by which the answer is due; None: no deadline.
    deadline: float | None = None
    id: str = ""
    parameters: Mapping[str, bool | int | float | str] = field(default_factory=dict)
    #: Who the request runs for, opaque to engines (the Python backend's BLS
    #: calls act for it); None: nobody in particular.
    caller: object | None = None


#: What ``infer_requests`` gives back for each request: its outputs or its failure.
RequestResult = dict[str, np.ndarray] | EngineRequestError


class Engine(abc.ABC):
    """A loaded model version. Create through the engine's own constructor or
    ``load``; release with ``close`` (also a context manager)."""

    #: How many ``infer`` calls may run at once on this engine.
    max_concurrency: int = 1
    #: True: the scheduler hands a batch to ``infer_requests`` as its separate
    #: requests (no merge, no padding) and each request gets its own answer.
    takes_requests: bool = False
    #: False: the server never runs it on made-up inputs before READY (no
    #: warm-up), e.g. user code that may call models not loaded yet.
    warms_up: bool = True

    @property
    @abc.abstractmethod
    def signature(self) -> Signature: ...

    @abc.abstractmethod
    def infer(
        self,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[str] | None = None,
    ) -> dict[str, np.ndarray]:
        """Run one batch. ``outputs`` None means every output. Raises
        ``EngineError`` for a failure that belongs to this call."""

    def infer_requests(self, requests: Sequence[RequestCall]) -> list[RequestResult]:
        """Run one batch given as its requests (only when ``takes_requests``);
        one result per request, in order. Raises ``EngineError`` for a
        failure of the whole batch."""
        raise NotImplementedError

    def check_request(self, inputs: Mapping[str, np.ndarray]) -> None:
        """Refuse, per request and before batching, inputs this engine cannot
        run (raise ``EngineInputError``), so one bad request never fails a
        batch of good ones. The default accepts everything."""
        return None

    def probe(self, inputs: Mapping[str, np.ndarray]) -> None:
        """The scheduler's health probe: raise while the engine cannot serve.
        The default runs ``inputs`` (made-up ones of the smallest batch)."""
        self.infer(inputs)

    def use_engine_timeout(self, seconds: float | None) -> None:
        """The model's engine timeout (None: none). The default ignores it:
        the scheduler stops waiting on a hung call by itself; an engine that
        can end a hung call (kill a process) does so here."""
        return None

    def when_down(self, listener: Callable[[str], None]) -> None:
        """Call ``listener`` (from any thread) with the reason when a part of
        the engine goes down on its own, between batches. The default engine
        has no such part."""
        return None

    @abc.abstractmethod
    def close(self) -> None:
        """Free the model's memory. Idempotent."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
