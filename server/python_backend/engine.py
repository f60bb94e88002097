"""``PythonEngine``: a Python model's instances behind the engine contract.

The scheduler hands it each batch as its separate requests
(``takes_requests``); one idle instance process runs them through
``execute``. What comes back is checked against the config (an output it
does not declare, the wrong datatype or shape is INTERNAL naming the
output). An instance that dies fails its batch UNAVAILABLE, tells the
``when_down`` listener (the scheduler marks the version unhealthy, so it
reports not-ready) and is restarted with backoff; ``probe`` passes again
once every instance runs. As in Triton, the model's code never runs on
made-up inputs (``warms_up``): a BLS model would call models that may not
be loaded yet.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from inferd.engines.base import (
    Engine,
    EngineError,
    EngineRequestError,
    RequestCall,
    RequestResult,
    Signature,
)
from inferd.server.errors import InferdError
from inferd.server.identity import Principal, acting_for
from inferd.server.model_link import ModelCall, ModelCaller
from inferd.server.python_backend.outputs import checked_outputs
from inferd.server.python_backend.process import ModelProcess
from inferd.server.python_backend.transport import unpack

log = logging.getLogger("inferd.python_backend")

#: Restart delays grow from the first to the last, doubling.
RESTART_FIRST_S = 0.25
RESTART_MAX_S = 30.0
#: An instance that ran this long before dying restarts after the first delay again.
RESTART_RESET_S = 60.0


def restart_delay_s(failures: int) -> float:
    """Seconds before restarting an instance that has failed to stay up
    ``failures`` times in a row: 0.25, 0.5, 1, ... up to 30."""
    return min(RESTART_FIRST_S * float(2 ** min(failures, 16)), RESTART_MAX_S)


class PythonEngine(Engine):
    takes_requests = True
    warms_up = False

    def __init__(
        self,
        name: str,
        signature: Signature,
        setups: Sequence[dict[str, Any]],
        *,
        batched: bool,
        caller: ModelCaller | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        hang_timeout_s: float | None = None,
        start_timeout_s: float = 120.0,
    ) -> None:
        self.name = name
        self._signature = signature
        #: The config's max_batch_size > 0: each output must have the request's rows.
        self.batched = batched
        self.max_concurrency = len(setups)
        self.caller = caller
        self.loop = loop
        self.hang_timeout_s = hang_timeout_s
        self.start_timeout_s = start_timeout_s
        #: Told (from a reader thread) why an instance went down.
        self._on_down: Callable[[str], None] | None = None
        self._closed = False
        self._idle: queue.SimpleQueue[ModelProcess] = queue.SimpleQueue()
        self._processes = [
            ModelProcess(
                f"model '{name}' instance {i}", setup, on_bls=self._bls, on_exit=self._exited
            )
            for i, setup in enumerate(setups)
        ]
        self._started_at: dict[int, float] = {}
        self._failures: dict[int, int] = {}
        self._start_all()

    def _start_all(self) -> None:
        errors: list[EngineError] = []

        def start(process: ModelProcess) -> None:
            try:
                process.start(self.start_timeout_s)
            except EngineError as exc:
                errors.append(exc)

        threads = [threading.Thread(target=start, args=(p,)) for p in self._processes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            self.close()
            raise errors[0]
        now = time.monotonic()
        for process in self._processes:
            self._started_at[id(process)] = now
            self._idle.put(process)

    @property
    def signature(self) -> Signature:
        return self._signature

    @property
    def pids(self) -> list[int | None]:
        """Each instance's process id (tests and operators use them)."""
        return [p.pid for p in self._processes]

    # -- running ---------------------------------------------------------------------------

    def infer(
        self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        (result,) = self.infer_requests([RequestCall(inputs, tuple(outputs or ()))])
        if isinstance(result, EngineRequestError):
            raise result
        return result

    def infer_requests(self, requests: Sequence[RequestCall]) -> list[RequestResult]:
        process = self._idle.get()
        try:
            results = process.execute(requests, self.hang_timeout_s)
        finally:
            self._idle.put(process)
        if len(results) != len(requests):
            raise EngineRequestError("the model process answered the wrong number of requests")
        return [self.checked(call, result) for call, result in zip(requests, results, strict=True)]

    def checked(self, call: RequestCall, result: RequestResult) -> RequestResult:
        return checked_outputs(self.name, self._signature, self.batched, call, result)

    def probe(self, inputs: Mapping[str, np.ndarray]) -> None:
        """Raises while an instance is down; the model's code never sees ``inputs``."""
        down = [p.label for p in self._processes if not p.alive]
        if down:
            raise EngineError(f"{down[0]} is restarting")

    def use_engine_timeout(self, seconds: float | None) -> None:
        """A hung model process is killed (and restarted) at the engine timeout."""
        self.hang_timeout_s = seconds

    def when_down(self, listener: Callable[[str], None]) -> None:
        self._on_down = listener

    # -- BLS -------------------------------------------------------------------------------

    def _bls(
        self,
        process: ModelProcess,
        bls_id: int,
        call_id: int | None,
        model: str,
        version: str,
        wires: dict[str, Any],
        outputs: tuple[str, ...],
        remaining: float | None,
    ) -> None:
        """A BLS request from ``process`` (its reader thread): run it on the
        server's loop, for the callers of the batch it was made in, and send
        the answer back when it is done."""
        if self.caller is None or self.loop is None:
            self._reply(process, bls_id, ("error", "UNAVAILABLE", "BLS calls are not available"))
            return
        try:
            inputs = unpack(wires)
        except OSError:
            self._reply(process, bls_id, ("error", "INTERNAL", "cannot read the BLS inputs"))
            return
        deadline = None if remaining is None else time.monotonic() + remaining
        acting_for = self._acting_for(process, call_id)
        call = ModelCall(model, version, inputs, outputs, deadline, acting_for)
        future = asyncio.run_coroutine_threadsafe(self.caller(call), self.loop)
        future.add_done_callback(lambda f: self._answered(process, bls_id, f))

    @staticmethod
    def _acting_for(process: ModelProcess, call_id: int | None) -> Principal | None:
        """Who a BLS call made in batch ``call_id`` acts for: its requests'
        callers together; None when any of them is nobody (warmup) or the call
        was made outside a batch."""
        callers = process.callers.get(call_id) if call_id is not None else None
        if not callers:
            return None
        principals = [c for c in callers if isinstance(c, Principal)]
        return acting_for(principals) if len(principals) == len(callers) else None

    def _answered(
        self,
        process: ModelProcess,
        bls_id: int,
        future: concurrent.futures.Future[dict[str, np.ndarray]],
    ) -> None:
        try:
            outputs = future.result()
        except InferdError as exc:
            self._reply(process, bls_id, ("error", exc.code.name, exc.message))
        except concurrent.futures.CancelledError:
            self._reply(process, bls_id, ("error", "CANCELLED", "the BLS call was cancelled"))
        except Exception:
            log.exception("model '%s': BLS call failed", self.name)
            self._reply(process, bls_id, ("error", "INTERNAL", "the BLS call failed"))
        else:
            self._reply(process, bls_id, ("ok", process.transport.pack(outputs)))

    @staticmethod
    def _reply(process: ModelProcess, bls_id: int, answer: tuple[Any, ...]) -> None:
        # The process may have died meanwhile; its restart starts afresh.
        with contextlib.suppress(OSError, ValueError):
            process.send(("bls_result", bls_id, answer))

    # -- faults and restarts ---------------------------------------------------------------

    def _exited(self, process: ModelProcess, reason: str) -> None:
        if self._closed:
            return
        log.error(
            "%s exited (%s); restarting it",
            process.label,
            reason,
            extra={"event": "model_process_exited", "model": self.name, "reason": reason},
        )
        if self._on_down is not None:
            try:
                self._on_down(f"{process.label} exited ({reason})")
            except Exception:
                log.exception("on_down listener failed")
        threading.Thread(
            target=self._restart, args=(process,), name=f"restart-{self.name}", daemon=True
        ).start()

    def _restart(self, process: ModelProcess) -> None:
        key = id(process)
        if time.monotonic() - self._started_at.get(key, 0.0) > RESTART_RESET_S:
            self._failures[key] = 0
        while not self._closed:
            failures = self._failures.get(key, 0)
            time.sleep(restart_delay_s(failures))
            self._failures[key] = failures + 1
            if self._closed:
                return
            try:
                process.start(self.start_timeout_s)
            except EngineError as exc:
                log.error("%s failed to restart: %s", process.label, exc)
                continue
            if self._closed:  # unloaded while it started: end it again
                process.stop(timeout_s=10.0)
                return
            self._started_at[key] = time.monotonic()
            log.info(
                "%s restarted (pid %s)",
                process.label,
                process.pid,
                extra={"event": "model_process_restarted", "model": self.name},
            )
            return

    def close(self) -> None:
        """Run each instance's ``finalize`` and end the processes. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for process in self._processes:
            reason = process.stop(timeout_s=10.0)
            if reason is not None:
                log.error("%s: finalize failed: %s", process.label, reason)
