"""Locust load test for inferd over gRPC.

    locust -f clients/locustfile.py --headless -u 32 -r 32 -t 30s \\
        --host 127.0.0.1:8001 --csv results/locust --model digits_mlp \\
        --max-p99-ms 50 --max-failure-ratio 0.01

Each simulated user sends ModelInfer requests back to back through our
client on a gevent-compatible gRPC channel and fires one Locust request event
per call (name = model, type = "grpc"), so Locust's stats, CSV output and
web UI work as for HTTP. The run exits 1 when the p99 latency or the failure
ratio exceeds the thresholds given on the command line.
"""

from __future__ import annotations

import time
from typing import Any

import grpc.experimental.gevent as grpc_gevent

grpc_gevent.init_gevent()  # before any channel exists: gRPC must yield to gevent

import numpy as np  # noqa: E402
from locust import User, events, task  # noqa: E402
from locust.env import Environment  # noqa: E402

from inferd.clients import InferenceClient, InferenceServerError  # noqa: E402

#: Inputs for the demo models; other models need --input-shape.
_DEMO_INPUTS = {
    "digits_mlp": lambda rows: {
        "pixels": np.random.default_rng(0).uniform(0, 16, (rows, 64)).astype(np.float32)
    },
    "dense_reference": lambda rows: {"x": np.ones((rows, 1024), np.float32)},
}


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument("--model", default="digits_mlp", help="model to call")
    parser.add_argument("--rows", type=int, default=1, help="rows per request")
    parser.add_argument("--timeout-ms", type=float, default=1000.0, help="per-call deadline")
    parser.add_argument("--max-p99-ms", type=float, default=0.0, help="fail above this p99")
    parser.add_argument(
        "--max-failure-ratio", type=float, default=-1.0, help="fail above this ratio"
    )


@events.quitting.add_listener
def _check_thresholds(environment: Environment, **_: Any) -> None:
    stats = environment.stats.total
    opts = environment.parsed_options
    if opts is None or stats.num_requests == 0:
        return
    problems = []
    p99 = stats.get_response_time_percentile(0.99)
    if opts.max_p99_ms > 0 and p99 > opts.max_p99_ms:
        problems.append(f"p99 {p99:.1f} ms > {opts.max_p99_ms:g} ms")
    if 0 <= opts.max_failure_ratio < stats.fail_ratio:
        problems.append(f"failure ratio {stats.fail_ratio:.4f} > {opts.max_failure_ratio:g}")
    if problems:
        print("inferd thresholds missed: " + "; ".join(problems))
        environment.process_exit_code = 1


class InferdUser(User):
    """One caller sending requests back to back (closed loop)."""

    def on_start(self) -> None:
        opts = self.environment.parsed_options
        self.model = opts.model if opts else "digits_mlp"
        self.timeout = (opts.timeout_ms if opts else 1000.0) / 1e3
        rows = opts.rows if opts else 1
        self.inputs = _DEMO_INPUTS[self.model](rows)
        self.client = InferenceClient(self.host or "127.0.0.1:8001")

    def on_stop(self) -> None:
        self.client.close()

    @task
    def infer(self) -> None:
        start = time.perf_counter()
        exception: Exception | None = None
        length = 0
        try:
            result = self.client.infer(self.model, self.inputs, timeout=self.timeout)
            length = sum(a.nbytes for a in result.values())
        except InferenceServerError as exc:
            exception = exc
        events.request.fire(
            request_type="grpc",
            name=self.model,
            response_time=(time.perf_counter() - start) * 1e3,
            response_length=length,
            exception=exception,
            context={},
        )
