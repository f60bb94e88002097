"""Locust load test for any model served by inferd (or Triton) over gRPC.

    locust -f clients/locustfile.py --headless -u 32 -r 32 -t 30s \\
        --host 127.0.0.1:8001 --csv results/locust --model my_model \\
        [--rows 4] [--shape ids=16] [--data inputs.npz] [--stream] \\
        --max-p95-ms 20 --max-p99-ms 50 --max-failure-ratio 0.01

Inputs are built from the model's metadata (every datatype, BYTES and
FP16/BF16 included; ``--rows`` rows when the model batches; ``--shape
NAME=D1,D2`` sizes an input's variable dims, otherwise 1) or read from
``--data`` (.npz by input name, .npy for a one-input model, or JSON). Each
simulated user sends requests back to back through our client on a
gevent-compatible gRPC channel, unary or (``--stream``) over one
ModelStreamInfer stream per user, and fires one Locust request event per
answer (name = model, type = "grpc" or "grpc-stream"), so Locust's stats, CSV
output and web UI work as for HTTP. The run exits 1 when the p95 or p99
latency or the failure ratio exceeds the thresholds, 2 when the inputs cannot
be built (the message says why).
"""

from __future__ import annotations

import itertools
import queue
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import grpc.experimental.gevent as grpc_gevent

grpc_gevent.init_gevent()  # before any channel exists: gRPC must yield to gevent

import gevent  # noqa: E402
import numpy as np  # noqa: E402
from locust import User, events, task  # noqa: E402
from locust.env import Environment  # noqa: E402

from inferd.clients import InferenceClient, InferenceServerError  # noqa: E402
from inferd.clients.request_data import (  # noqa: E402
    InputDataError,
    load_inputs,
    parse_shape_overrides,
    synthetic_inputs,
)

#: Inputs built once per process and model, shared by every user.
_INPUTS: dict[str, dict[str, np.ndarray]] = {}


@events.init.add_listener
def _fresh_clock(**_: Any) -> None:
    # init_gevent made the hub at import; its cached clock is as old as the imports
    # since, and locust's --run-time timer, set from it, would fire that much early.
    gevent.get_hub().loop.update_now()


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument("--model", default="digits_mlp", help="model to call")
    parser.add_argument("--model-version", default="", help="version (default: the server's)")
    parser.add_argument("--rows", type=int, default=1, help="rows per request (batching models)")
    parser.add_argument(
        "--shape", action="append", default=[], metavar="NAME=D1,D2",
        help="sizes of an input's variable dims, without the batch dim (repeatable)",
    )  # fmt: skip
    parser.add_argument("--data", default="", help="inputs from a .npz, .npy or .json file")
    parser.add_argument("--stream", action="store_true", help="send over ModelStreamInfer")
    parser.add_argument("--timeout-ms", type=float, default=1000.0, help="per-call deadline")
    parser.add_argument("--max-p95-ms", type=float, default=0.0, help="fail above this p95")
    parser.add_argument("--max-p99-ms", type=float, default=0.0, help="fail above this p99")
    parser.add_argument(
        "--max-failure-ratio", type=float, default=-1.0, help="fail above this ratio"
    )


@events.quitting.add_listener
def _check_thresholds(environment: Environment, **_: Any) -> None:
    stats = environment.stats.total
    opts = environment.parsed_options
    if opts is None or stats.num_requests == 0 or environment.process_exit_code == 2:
        return
    problems = []
    for quantile, limit in ((0.95, opts.max_p95_ms), (0.99, opts.max_p99_ms)):
        value = stats.get_response_time_percentile(quantile)
        if limit > 0 and value > limit:
            problems.append(f"p{round(quantile * 100)} {value:.1f} ms > {limit:g} ms")
    if 0 <= opts.max_failure_ratio < stats.fail_ratio:
        problems.append(f"failure ratio {stats.fail_ratio:.4f} > {opts.max_failure_ratio:g}")
    if problems:
        print("inferd thresholds missed: " + "; ".join(problems))
        environment.process_exit_code = 1


def model_inputs(client: InferenceClient, opts: Any) -> dict[str, np.ndarray]:
    """The request's inputs for ``opts.model``, from its metadata or ``opts.data``."""
    key = f"{opts.model}:{opts.model_version}"
    if key not in _INPUTS:
        metadata = client.model_metadata(opts.model, opts.model_version)
        if opts.data:
            _INPUTS[key] = load_inputs(Path(opts.data), metadata)
        else:
            config = client.model_config(opts.model, opts.model_version)
            _INPUTS[key] = synthetic_inputs(
                metadata,
                max_batch_size=int(config.get("max_batch_size", 0)),
                rows=opts.rows,
                shapes=parse_shape_overrides(opts.shape),
            )
    return _INPUTS[key]


def _payload_bytes(array: np.ndarray) -> int:
    """Bytes of an answer's tensor (BYTES: the elements' lengths, not pointers)."""
    if array.dtype == object:
        return sum(len(item) for item in array.flat)
    return int(array.nbytes)


class InferdUser(User):
    """One caller sending requests back to back (closed loop)."""

    def on_start(self) -> None:
        opts = self.environment.parsed_options
        self.opts = opts
        self.model = opts.model if opts else "digits_mlp"
        self.version = opts.model_version if opts else ""
        self.timeout = (opts.timeout_ms if opts else 1000.0) / 1e3
        self.client = InferenceClient(self.host or "127.0.0.1:8001")
        self.replies: Iterator[Any] | None = None
        try:
            self.inputs = model_inputs(self.client, opts)
        except (InputDataError, InferenceServerError) as exc:
            print(f"error: cannot build inputs for {self.model!r}: {exc}")
            self.environment.process_exit_code = 2
            if self.environment.runner is not None:
                self.environment.runner.quit()
            raise

    def on_stop(self) -> None:
        self._close_stream()
        self.client.close()

    def _close_stream(self) -> None:
        if self.replies is not None:
            self.sends.put(None)  # ends the feed: the stream half-closes
            self.replies = None

    def _open_stream(self) -> Iterator[Any]:
        """One stream per user; requests are fed from a queue as the task sends them."""
        self.sends: queue.Queue[tuple[str, dict[str, np.ndarray]] | None] = queue.Queue()
        self.ids = itertools.count()
        sends = self.sends

        def feed() -> Iterator[tuple[str, dict[str, np.ndarray]]]:
            while (item := sends.get()) is not None:
                yield item

        return self.client.stream_infer(self.model, feed(), version=self.version)

    def _stream_call(self) -> Any:
        if self.replies is None:
            self.replies = self._open_stream()
        self.sends.put((str(next(self.ids)), self.inputs))
        try:
            reply = next(self.replies)
        except (InferenceServerError, StopIteration) as exc:
            self._close_stream()  # the stream itself ended: the next call opens another
            if isinstance(exc, StopIteration):
                raise InferenceServerError(
                    grpc.StatusCode.UNKNOWN, "the stream ended without an answer"
                ) from None
            raise
        if isinstance(reply, InferenceServerError):
            raise reply  # this request failed; the stream goes on
        return reply

    @task
    def infer(self) -> None:
        stream = self.opts is not None and self.opts.stream
        start = time.perf_counter()
        exception: Exception | None = None
        length = 0
        try:
            if stream:
                result = self._stream_call()
            else:
                result = self.client.infer(
                    self.model, self.inputs, version=self.version, timeout=self.timeout
                )
            length = sum(_payload_bytes(a) for a in result.values())
        except InferenceServerError as exc:
            exception = exc
        events.request.fire(
            request_type="grpc-stream" if stream else "grpc",
            name=self.model,
            response_time=(time.perf_counter() - start) * 1e3,
            response_length=length,
            exception=exception,
            context={},
        )
