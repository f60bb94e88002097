"""The server's handle on one model process: start it, send it batches,
route what it sends back, notice when it dies.

A reader thread per process takes every message: results go to the waiting
engine thread, BLS requests to ``on_bls``. End of file means the process is
gone: every call in flight fails UNAVAILABLE and ``on_exit`` is told, once.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import inferd
from inferd.engines.base import EngineError, EngineRequestError, RequestCall, RequestResult
from inferd.engines.messages import clean_message
from inferd.server.python_backend.transport import Transport, sweep, unpack

log = logging.getLogger("inferd.python_backend")

#: Called for a BLS request: (process, bls_id, the call id of the batch it
#: was made in or None, model, version, inputs wires, output names,
#: remaining seconds or None).
BlsHook = Callable[
    ["ModelProcess", int, int | None, str, str, dict[str, Any], tuple[str, ...], float | None],
    None,
]


#: Where a process that died before it could say why wrote its traceback.
_SEE_LOG = "; its output is in the server's log"

#: The folder holding the ``inferd`` package: all an environment of the
#: model's own (``EXECUTION_ENV_PATH``) needs from the server's.
IMPORT_ROOT = str(Path(inferd.__file__).parent.parent)


def spawn(setup: dict[str, Any]) -> tuple[subprocess.Popen[bytes], Connection]:
    """Start ``python -m inferd.server.python_backend.stub`` with one end of
    a socket pair, and send it ``setup``. A fresh interpreter (not a fork of
    the server, nor multiprocessing's spawn, which re-imports ``__main__``):
    the server's, or ``setup["python"]`` (the model's own environment, which
    then sees only inferd from the server's path)."""
    ours, theirs = socket.socketpair()
    env = dict(os.environ)
    python = setup.get("python") or sys.executable
    if setup.get("python"):
        env["PYTHONPATH"] = IMPORT_ROOT
    else:
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))
    try:
        process = subprocess.Popen(
            [python, "-m", "inferd.server.python_backend.stub", str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
            env=env,
        )
    finally:
        theirs.close()
    conn = Connection(ours.detach())
    conn.send(setup)
    return process, conn


class ModelProcess:
    """One instance of a Python model, in its own process."""

    def __init__(
        self,
        label: str,
        setup: dict[str, Any],
        *,
        on_bls: BlsHook,
        on_exit: Callable[[ModelProcess, str], None],
    ) -> None:
        #: Names the instance in logs and messages ("model 'm' instance 0").
        self.label = label
        self._setup = setup
        self._on_bls = on_bls
        self._on_exit = on_exit
        self._process: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._send_lock = threading.Lock()
        self._pending: dict[int, concurrent.futures.Future[list[RequestResult]]] = {}
        #: Who each batch executing now runs for, by call id (its BLS calls act for them).
        self.callers: dict[int, tuple[object | None, ...]] = {}
        self._ids = itertools.count()
        self._finalized = threading.Event()
        self._finalize_reason: str | None = None
        self._prefix = ""
        self.transport = Transport("")
        #: True between a successful ``start`` and the process's end.
        self.alive = False
        self._stopping = False

    def _paths(self) -> list[str]:
        """Paths a message from the model may quote (reduced to ``<model>``)."""
        model_file = str(self._setup.get("model_file", ""))
        return [str(os.path.dirname(os.path.dirname(model_file))), model_file] if model_file else []

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self, timeout_s: float) -> None:
        """Spawn the process and wait for ``initialize``; raises EngineError
        with the model's reason when it fails to import or initialize."""
        self._prefix = f"inferd-py-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.transport = Transport(self._prefix + "-s")
        self._finalized.clear()
        try:
            process, ours = spawn(dict(self._setup, prefix=self._prefix + "-m"))
        except OSError as exc:
            raise EngineError(f"cannot start the model process: {exc.strerror}") from None
        reason = self._wait_ready(ours, process, timeout_s)
        if reason is not None:
            _reap(process)
            ours.close()
            sweep(self._prefix)
            raise EngineError(clean_message(reason, self._paths()))
        self._process, self._conn = process, ours
        self.alive = True
        self._stopping = False
        threading.Thread(
            target=self._read, args=(ours,), name=f"{self.label}-reader", daemon=True
        ).start()

    @staticmethod
    def _wait_ready(
        conn: Connection, process: subprocess.Popen[bytes], timeout_s: float
    ) -> str | None:
        """None once the model is initialized, else why it is not."""
        until = time.monotonic() + timeout_s
        while time.monotonic() < until:
            if conn.poll(0.1):
                try:
                    message = conn.recv()
                except (EOFError, OSError):
                    _reap(process)
                    return (
                        f"the model process exited while loading ({exit_text(process)}{_SEE_LOG})"
                    )
                return None if message[0] == "ready" else str(message[1])
            if process.poll() is not None:
                return f"the model process exited while loading ({exit_text(process)}{_SEE_LOG})"
        process.kill()
        return f"the model did not initialize within {timeout_s:.0f} s"

    def send(self, message: tuple[Any, ...]) -> None:
        conn = self._conn
        if conn is None:
            raise OSError("the model process is not running")
        with self._send_lock:
            conn.send(message)

    def execute(self, calls: Sequence[RequestCall], timeout_s: float | None) -> list[RequestResult]:
        """Run one batch in the process; raises ``EngineRequestError``
        (UNAVAILABLE) when the process dies or hangs past ``timeout_s``."""
        if not self.alive:
            raise EngineRequestError(f"{self.label} is restarting; retry", "UNAVAILABLE")
        call_id = next(self._ids)
        future: concurrent.futures.Future[list[RequestResult]] = concurrent.futures.Future()
        self._pending[call_id] = future
        self.callers[call_id] = tuple(c.caller for c in calls)
        try:
            return self._execute(call_id, future, calls, timeout_s)
        finally:
            del self.callers[call_id]

    def _execute(
        self,
        call_id: int,
        future: concurrent.futures.Future[list[RequestResult]],
        calls: Sequence[RequestCall],
        timeout_s: float | None,
    ) -> list[RequestResult]:
        deadlines = [c.deadline for c in calls if c.deadline is not None]
        remaining = min(deadlines) - time.monotonic() if deadlines else None
        requests = [
            (self.transport.pack(c.inputs), c.outputs, c.id, _json(c.parameters)) for c in calls
        ]
        try:
            self.send(("execute", call_id, requests, remaining))
        except (OSError, ValueError):
            self._pending.pop(call_id, None)
            raise EngineRequestError(f"{self.label} is not running; retry", "UNAVAILABLE") from None
        try:
            return future.result(timeout_s)
        except concurrent.futures.TimeoutError:
            log.error("%s did not answer within %.1f s; killing it", self.label, timeout_s)
            self.kill()
            try:
                return future.result(10)
            except concurrent.futures.TimeoutError:
                raise EngineRequestError(f"{self.label} hung; retry", "UNAVAILABLE") from None

    def _read(self, conn: Connection) -> None:
        try:
            while True:
                message = conn.recv()
                kind = message[0]
                if kind == "result":
                    future = self._pending.pop(message[1], None)
                    if future is not None:
                        paths = self._paths()
                        future.set_result([_result(a, paths) for a in message[2]])
                elif kind == "bls":
                    self._on_bls(self, *message[1:])
                elif kind == "finalized":
                    self._finalize_reason = message[1]
                    self._finalized.set()
        except (EOFError, OSError):
            pass
        except Exception:
            log.exception("%s: bad message from the model process", self.label)
        self._ended(conn)

    def _ended(self, conn: Connection) -> None:
        prefix, process = self._prefix, self._process  # before a restart replaces them
        if process is not None:
            _reap(process)
        reason = exit_text(process) if process is not None else "gone"
        self.alive = False
        conn.close()
        # Told first, so the model reports not-ready before the failed batch is answered.
        if not self._stopping:
            self._on_exit(self, reason)
        error = EngineRequestError(
            f"{self.label} exited ({reason}) while running this request; retry", "UNAVAILABLE"
        )
        for call_id in list(self._pending):
            future = self._pending.pop(call_id, None)
            if future is not None and not future.done():
                future.set_exception(error)
        sweep(prefix)

    def kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()

    def stop(self, timeout_s: float) -> str | None:
        """Run ``finalize`` and end the process (killed past ``timeout_s``);
        returns finalize's failure, if any."""
        self._stopping = True
        process = self._process
        if process is None or not self.alive:
            return None
        try:
            self.send(("finalize",))
        except (OSError, ValueError):
            pass
        else:
            if not self._finalized.wait(timeout_s):
                log.error("%s: finalize did not return within %.0f s", self.label, timeout_s)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            _reap(process)
        return self._finalize_reason


def _reap(process: subprocess.Popen[bytes]) -> None:
    """Wait for the process to end (killed if it does not within 5 s)."""
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def exit_text(process: subprocess.Popen[bytes] | None) -> str:
    code = process.returncode if process is not None else None
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _result(answer: tuple[Any, ...], paths: list[str]) -> RequestResult:
    if answer[0] == "ok":
        try:
            return unpack(answer[1])
        except OSError:
            return EngineRequestError("the model's outputs could not be read", "INTERNAL")
    return EngineRequestError(clean_message(str(answer[2]), paths), str(answer[1]))


def _json(parameters: Any) -> str:
    return json.dumps(dict(parameters))
