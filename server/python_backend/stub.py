"""The model process: loads ``model.py``, runs ``TritonPythonModel`` and
answers the server over its channel. Imports no server module beyond this
package (no protobuf, no gRPC), so it starts quickly.

Messages (tuples; tensors as ``transport`` wires), server -> model:
``("execute", call_id, requests, remaining_s)`` with each request
``(wires, output_names, request_id, parameters_json)``;
``("bls_result", bls_id, answer)``; ``("finalize",)``.
Model -> server: ``("ready",)`` or ``("failed", reason)`` once;
``("result", call_id, answers)`` with each answer ``("ok", wires)`` or
``("error", status, message)``; ``("bls", bls_id, call_id, model, version,
wires, output_names, remaining_s)`` with the ``call_id`` of the batch being
executed (None outside ``execute``); ``("finalized", reason_or_None)``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib.util
import inspect
import itertools
import logging
import os
import queue
import sys
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from inferd.server.python_backend import pb_utils
from inferd.server.python_backend.transport import Transport, unpack

#: TritonError codes -> gRPC status names, both ways.
STATUS_OF_CODE = {
    pb_utils.TritonError.UNKNOWN: "UNKNOWN",
    pb_utils.TritonError.INTERNAL: "INTERNAL",
    pb_utils.TritonError.NOT_FOUND: "NOT_FOUND",
    pb_utils.TritonError.INVALID_ARG: "INVALID_ARGUMENT",
    pb_utils.TritonError.UNAVAILABLE: "UNAVAILABLE",
    pb_utils.TritonError.UNSUPPORTED: "UNIMPLEMENTED",
    pb_utils.TritonError.ALREADY_EXISTS: "ALREADY_EXISTS",
    pb_utils.TritonError.CANCELLED: "CANCELLED",
}
CODE_OF_STATUS = {status: code for code, status in STATUS_OF_CODE.items()}


def describe(exc: BaseException) -> str:
    """``Type: message``, the way a failed call is reported (no traceback)."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def load_model_class(model_file: Path, module_name: str = "model") -> Any:
    """Import ``model.py`` as ``module_name`` (its directory first on
    sys.path, as Triton has it) and return its ``TritonPythonModel`` class."""
    sys.modules["triton_python_backend_utils"] = pb_utils
    sys.path.insert(0, str(model_file.parent))
    spec = importlib.util.spec_from_file_location(module_name, model_file)
    if spec is None or spec.loader is None:
        raise ImportError("cannot import model.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    cls = getattr(module, "TritonPythonModel", None)
    if cls is None:
        raise ImportError("model.py defines no class TritonPythonModel")
    return cls


class Stub:
    """The model process's side of one channel."""

    def __init__(self, conn: Connection, prefix: str) -> None:
        self.conn = conn
        self.transport = Transport(prefix)
        self.inbox: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._send_lock = threading.Lock()
        self._bls: dict[int, concurrent.futures.Future[pb_utils.InferenceResponse]] = {}
        self._bls_ids = itertools.count()
        #: ``time.monotonic()`` deadline of the batch being executed (BLS inherits it).
        self.deadline: float | None = None
        #: The batch being executed: its BLS calls act for its callers.
        self.call_id: int | None = None
        self.loop = asyncio.new_event_loop()

    def send(self, message: tuple[Any, ...]) -> None:
        with self._send_lock:
            self.conn.send(message)

    def read(self) -> None:
        """Reader thread: BLS answers to their futures, the rest to ``inbox``."""
        try:
            while True:
                message = self.conn.recv()
                if message[0] == "bls_result":
                    self._bls_answered(message[1], message[2])
                else:
                    self.inbox.put(message)
        except (EOFError, OSError):
            os._exit(0)  # the server is gone: nobody is left to answer

    def _bls_answered(self, bls_id: int, answer: tuple[Any, ...]) -> None:
        future = self._bls.pop(bls_id, None)
        if future is None:
            return
        if answer[0] == "ok":
            try:
                outputs = unpack(answer[1])
            except OSError as exc:
                future.set_result(error_response(f"cannot read the BLS outputs: {exc}"))
                return
            tensors = [pb_utils.Tensor(name, array) for name, array in outputs.items()]
            future.set_result(pb_utils.InferenceResponse(tensors))
        else:
            code = CODE_OF_STATUS.get(answer[1], pb_utils.TritonError.INTERNAL)
            future.set_result(error_response(answer[2], code))

    def submit_bls(
        self, request: pb_utils.InferenceRequest
    ) -> concurrent.futures.Future[pb_utils.InferenceResponse]:
        """Send a BLS request to the server, with the batch's remaining time
        (or the request's own ``timeout``, if shorter)."""
        future: concurrent.futures.Future[pb_utils.InferenceResponse] = concurrent.futures.Future()
        remaining = None if self.deadline is None else self.deadline - time.monotonic()
        if request.timeout() > 0:
            own = request.timeout() / 1e6
            remaining = own if remaining is None else min(remaining, own)
        bls_id = next(self._bls_ids)
        self._bls[bls_id] = future
        version = "" if request.model_version() < 0 else str(request.model_version())
        arrays = {t.name(): t.as_numpy() for t in request.inputs()}
        outputs = tuple(request.requested_output_names())
        wires = self.transport.pack(arrays)
        name = request.model_name()
        self.send(("bls", bls_id, self.call_id, name, version, wires, outputs, remaining))
        return future

    def execute(
        self, model: Any, call_id: int, requests: list[Any], remaining: float | None
    ) -> None:
        self.deadline = None if remaining is None else time.monotonic() + remaining
        self.call_id = call_id
        batch = []
        try:
            for wires, outputs, request_id, parameters in requests:
                tensors = [pb_utils.Tensor(name, array) for name, array in unpack(wires).items()]
                batch.append(
                    pb_utils.InferenceRequest(
                        inputs=tensors,
                        requested_output_names=outputs,
                        request_id=request_id,
                        parameters=parameters,
                    )
                )
            responses = model.execute(batch)
            if inspect.isawaitable(responses):
                responses = self.loop.run_until_complete(responses)
            answers = self.answers(responses, len(batch))
        except Exception as exc:
            answers = [("error", "INTERNAL", describe(exc))] * len(requests)
        finally:
            self.deadline = None
            self.call_id = None
        try:
            self.send(("result", call_id, answers))
        except Exception as exc:  # an output numpy cannot pickle
            self.send(("result", call_id, [("error", "INTERNAL", describe(exc))] * len(requests)))

    def answers(self, responses: Any, count: int) -> list[tuple[Any, ...]]:
        if not isinstance(responses, (list, tuple)) or len(responses) != count:
            got = len(responses) if isinstance(responses, (list, tuple)) else type(responses)
            message = f"execute returned {got} responses for {count} requests"
            return [("error", "INTERNAL", message)] * count
        return [self.answer(response) for response in responses]

    def answer(self, response: Any) -> tuple[Any, ...]:
        if not isinstance(response, pb_utils.InferenceResponse):
            return (
                "error",
                "INTERNAL",
                "execute returned a response that is not an InferenceResponse",
            )
        error = response.error()
        if error is not None:
            status = STATUS_OF_CODE.get(error.code(), "INTERNAL")
            return ("error", status, error.message())
        arrays: dict[str, Any] = {}
        for tensor in response.output_tensors():
            if tensor.name() in arrays:
                return ("error", "INTERNAL", f"output '{tensor.name()}' is given twice")
            arrays[tensor.name()] = tensor.as_numpy()
        return ("ok", self.transport.pack(arrays))


def error_response(
    message: str, code: int = pb_utils.TritonError.INTERNAL
) -> pb_utils.InferenceResponse:
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code))


def main(conn: Connection, setup: dict[str, Any]) -> None:
    """Serve ``setup``'s model over ``conn`` until finalized or the server goes."""
    name = setup["args"].get("model_instance_name", "model")
    # pb_utils.Logger and the model's own logging reach the server's stderr.
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s %(levelname)s [{name}] %(message)s"
    )
    stub = Stub(conn, setup["prefix"])
    try:
        cls = load_model_class(Path(setup["model_file"]))
    except BaseException as exc:  # SyntaxError, SystemExit from a bad import, ...
        conn.send(("failed", f"model.py failed to import: {describe(exc)}"))
        return
    try:
        model = cls()
        if hasattr(model, "initialize"):
            model.initialize(dict(setup["args"]))
    except BaseException as exc:
        conn.send(("failed", f"initialize failed: {describe(exc)}"))
        return
    pb_utils.set_bls_handler(stub.submit_bls)
    threading.Thread(target=stub.read, name="model-channel", daemon=True).start()
    stub.send(("ready",))
    while (message := stub.inbox.get()) is not None:
        if message[0] == "execute":
            stub.execute(model, message[1], message[2], message[3])
        elif message[0] == "finalize":
            reason = None
            try:
                if hasattr(model, "finalize"):
                    model.finalize()
            except Exception as exc:
                reason = describe(exc)
            stub.send(("finalized", reason))
            return


if __name__ == "__main__":
    # python -m inferd.server.python_backend.stub FD: FD is our end of the channel.
    channel = Connection(int(sys.argv[1]))
    main(channel, channel.recv())
