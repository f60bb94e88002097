"""Load generator: closed and open loop over grpc.aio, in its own process(es).

The client must cost far less than the server it measures, so requests are
serialized once per distinct payload and sent as bytes through
``channel.unary_unary`` with no serializer, and responses are kept as bytes
(only the status is needed). On ``digits_mlp`` at concurrency 8 (uvloop, a
noisy 2-core machine) that cost 115-121 µs of client CPU per request against
128-136 µs through the generated stub: a small gain, most of the cost is
gRPC itself. Both are selectable (``Workload.call_style``).

Workers run in ``spawn``-ed processes so the generator never shares a GIL
with the caller (or, in tests, the server). With several workers the load is
split (closed loop: concurrency; open loop: every N-th arrival of one
schedule, each with its deadline, so bursts stay synchronized) and the raw
per-request samples are concatenated, never percentiles averaged.

Open loop pacing uses a timer thread (``time.sleep`` is precise to tens of
µs, epoll-based event loops only to 1 ms) that hands due arrivals to the event
loop; each request records its scheduled and actual send time and a point
whose p99 lag exceeds ``lag_limit_ms`` is marked invalid.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import multiprocessing as mp
import os
import queue
import random
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import grpc
import grpc.aio
import numpy as np

# --------------------------------------------------------------------------- target guard

LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"
T = TypeVar("T")


class TargetRefused(ValueError):
    """The target is not a loopback address and was not explicitly allowed."""


def split_target(target: str) -> tuple[str, int]:
    """``host:port`` / ``[v6]:port`` -> (host, port)."""
    if target.startswith("["):
        host, sep, port = target[1:].partition("]:")
    else:
        host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise TargetRefused(f"target must be HOST:PORT, got {target!r}")
    return host, int(port)


def check_target(target: str, allow_remote: str | None = None) -> str:
    """Refuse anything but loopback, unless that exact host was allowed."""
    host, _ = split_target(target)
    if host.lower() in LOOPBACK or (allow_remote is not None and host == allow_remote):
        return target
    raise TargetRefused(
        f"refusing to send load to {host!r}: only 127.0.0.1, localhost and ::1 are "
        f"allowed unless --allow-remote {host} is given"
    )


# --------------------------------------------------------------------------- workload


@dataclass(frozen=True)
class InputSpec:
    name: str
    shape: tuple[int, ...]  # including the batch dimension
    datatype: str = "FP32"
    low: float = 0.0
    high: float = 1.0


_NP_TYPES = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32}


@dataclass(frozen=True)
class Workload:
    model: str
    inputs: tuple[InputSpec, ...]
    outputs: tuple[str, ...] = ()
    #: Per-request SLO (ms) for goodput and SLO attainment; None = no deadline.
    deadline_ms: float | None = None
    #: Mixed deadlines instead: (share, deadline_ms) pairs, shares summing to
    #: 1; each request draws its own from the run's seed. Empty: ``deadline_ms``.
    deadline_mix: tuple[tuple[float, float], ...] = ()
    #: Also send the deadline as the gRPC timeout (the server then sheds late work).
    grpc_timeout: bool = True
    distinct_payloads: int = 4
    seed: int = 0
    call_style: Literal["raw", "stub"] = "raw"

    def __post_init__(self) -> None:
        if self.deadline_mix:
            shares = [share for share, _ in self.deadline_mix]
            if (
                min(shares) < 0
                or not math.isclose(sum(shares), 1.0, abs_tol=1e-9)
                or min(ms for _, ms in self.deadline_mix) <= 0
            ):
                raise ValueError("deadline_mix needs shares >= 0 that sum to 1 and deadlines > 0")

    @property
    def longest_deadline_ms(self) -> float | None:
        """The loosest deadline any request gets (where one bound is needed)."""
        if self.deadline_mix:
            return max(ms for _, ms in self.deadline_mix)
        return self.deadline_ms

    def deadlines_s(self, count: int, seed: int) -> np.ndarray:
        """The deadlines (s; inf: none) of ``count`` requests in send order,
        the same for the same seed so paired runs see the same sequence."""
        if not self.deadline_mix:
            return np.full(count, math.inf if self.deadline_ms is None else self.deadline_ms / 1e3)
        bounds = np.cumsum([share for share, _ in self.deadline_mix])
        values = np.asarray([ms / 1e3 for _, ms in self.deadline_mix])
        # A stream of its own: the arrival schedule draws from random.Random(seed).
        picks = np.searchsorted(bounds, np.random.default_rng([seed, 1]).random(count), "right")
        return values[np.minimum(picks, len(values) - 1)]

    @property
    def rows(self) -> int:
        return self.inputs[0].shape[0] if self.inputs and self.inputs[0].shape else 1

    def requests(self) -> list[bytes]:
        """The pre-serialized ModelInferRequests (deterministic from ``seed``)."""
        from inferd.protos import grpc_service_pb2 as pb

        rng = np.random.default_rng(self.seed)
        out: list[bytes] = []
        for _ in range(max(1, self.distinct_payloads)):
            msg = pb.ModelInferRequest(model_name=self.model)
            for spec in self.inputs:
                dtype = _NP_TYPES[spec.datatype]
                values = rng.uniform(spec.low, spec.high, size=spec.shape).astype(dtype)
                msg.inputs.add(name=spec.name, datatype=spec.datatype, shape=list(spec.shape))
                msg.raw_input_contents.append(values.tobytes())
            for name in self.outputs:
                msg.outputs.add(name=name)
            out.append(msg.SerializeToString())
        return out


# --------------------------------------------------------------------------- arrivals


@dataclass(frozen=True)
class Poisson:
    """Exponential inter-arrival times at ``rate`` requests/s."""

    rate: float

    def segments(self, duration: float, rng: random.Random) -> list[tuple[float, float, float]]:
        return [(0.0, duration, self.rate)]


@dataclass(frozen=True)
class Bursty:
    """ON/OFF arrivals with the mean rate of Poisson(``rate``): in each period
    of ``period_s`` a burst of ``on_fraction`` of it runs at ``factor`` x the
    mean rate and the rest at whatever rate keeps the mean (Poisson within
    each phase). Periodic rather than a random MMPP so that even a few-second
    run offers the nominal mean; the phase is random."""

    rate: float
    factor: float = 4.0
    on_fraction: float = 0.2
    period_s: float = 0.5

    def __post_init__(self) -> None:
        if not (0 < self.on_fraction < 1 and 1 <= self.factor <= 1 / self.on_fraction):
            raise ValueError("need 0 < on_fraction < 1 and 1 <= factor <= 1/on_fraction")

    def segments(self, duration: float, rng: random.Random) -> list[tuple[float, float, float]]:
        on_rate = self.rate * self.factor
        off_rate = self.rate * (1 - self.factor * self.on_fraction) / (1 - self.on_fraction)
        on_s = self.period_s * self.on_fraction
        out: list[tuple[float, float, float]] = []
        t = -rng.uniform(0, self.period_s)
        while t < duration:
            burst_end = t + on_s
            if burst_end > 0:
                out.append((max(0.0, t), min(duration, burst_end), on_rate))
            period_end = t + self.period_s
            if period_end > 0 and burst_end < duration:
                out.append((max(0.0, burst_end), min(duration, period_end), off_rate))
            t = period_end
        return out


@dataclass(frozen=True)
class Step:
    """Poisson arrivals whose rate steps through ``rates``, ``step_s`` each
    (the last rate holds to the end)."""

    rates: tuple[float, ...]
    step_s: float

    @property
    def rate(self) -> float:
        return sum(self.rates) / len(self.rates)

    def segments(self, duration: float, rng: random.Random) -> list[tuple[float, float, float]]:
        out = []
        for i, r in enumerate(self.rates):
            start = i * self.step_s
            if start >= duration:
                break
            end = duration if i == len(self.rates) - 1 else min(duration, start + self.step_s)
            out.append((start, end, r))
        return out


Arrival = Poisson | Bursty | Step


def schedule(arrival: Arrival, duration: float, seed: int = 0) -> np.ndarray:
    """Send offsets (s from the start) of one realisation of ``arrival``."""
    rng = random.Random(seed)
    times: list[float] = []
    for start, end, rate in arrival.segments(duration, rng):
        if rate <= 0:
            continue
        t = start + rng.expovariate(rate)  # memoryless: restart at each segment
        while t < end:
            times.append(t)
            t += rng.expovariate(rate)
    return np.asarray(times, dtype=np.float64)


# --------------------------------------------------------------------------- results


def deadline_key(seconds: float) -> str:
    """How a deadline names its share of the figures: milliseconds."""
    return f"{seconds * 1e3:g}"


UNFINISHED = -1  # no answer before the hard stop
STATUS_NAMES = {c.value[0]: c.name for c in grpc.StatusCode} | {UNFINISHED: "UNFINISHED"}
_REFUSALS = {grpc.StatusCode.UNAVAILABLE.value[0], grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]}
_DEADLINE = grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
#: How inferd's admission refusals (DEADLINE_EXCEEDED at arrival) begin: the
#: same text as ``server.scheduler.admission.ADMISSION_REFUSAL`` (a test ties the two;
#: load workers do not import the server). It tells a request refused at
#: arrival from one that was admitted and then expired in the queue.
ADMISSION_REFUSAL = "cannot finish within the deadline"


def refused_at_arrival(code: int, detail: str) -> bool:
    return code in _REFUSALS or (code == _DEADLINE and detail.startswith(ADMISSION_REFUSAL))


_UNKNOWN = grpc.StatusCode.UNKNOWN.value[0]
PERCENTILES = (50.0, 90.0, 95.0, 99.0, 99.9)


def percentiles(
    values: Sequence[float] | np.ndarray, qs: Sequence[float] = PERCENTILES
) -> list[float]:
    """Nearest-rank percentiles (each one an observed value); NaN when empty."""
    data = np.sort(np.asarray(values, dtype=np.float64))
    if data.size == 0:
        return [math.nan] * len(qs)
    # round() first: 99.9 / 100 * 1000 is 999.0000000000001 in binary floating point.
    ranks = [min(data.size, max(1, math.ceil(round(q / 100 * data.size, 9)))) for q in qs]
    return [float(data[r - 1]) for r in ranks]


@dataclass
class Samples:
    """One row per request; times in seconds from the run's start."""

    scheduled: np.ndarray
    sent: np.ndarray
    latency: np.ndarray  # NaN when unfinished
    status: np.ndarray  # grpc code value, UNFINISHED = -1
    #: The server refused the request at arrival (not admitted): UNAVAILABLE,
    #: RESOURCE_EXHAUSTED, or inferd's admission refusal (``ADMISSION_REFUSAL``).
    #: A request that expired in the queue was admitted.
    refused: np.ndarray
    #: Each request's own deadline (s after it was sent; inf: none).
    deadline: np.ndarray

    @classmethod
    def empty(cls) -> Samples:
        z = np.zeros(0)
        return cls(z, z, z, np.zeros(0, dtype=np.int16), np.zeros(0, dtype=bool), z)

    @classmethod
    def concat(cls, parts: Sequence[Samples]) -> Samples:
        if not parts:
            return cls.empty()
        return cls(
            *(np.concatenate([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(cls))
        )

    def __len__(self) -> int:
        return int(self.status.size)


@dataclass
class Summary:
    sent: int
    sent_rps: float  # sent in the window per second (open loop: the realised rate)
    ok: int
    throughput_rps: float  # OK responses completed in the window, per second
    rows_per_s: float
    goodput_rps: float  # OK within their own deadline, completed in the window, per s
    slo_attainment: float  # OK within deadline / all sent
    refusal_rate: float  # server said no before the deadline / all sent
    #: OK within deadline / admitted (sent less those the server refused at
    #: arrival; requests that expired in its queue count as admitted and missed).
    admitted_on_time: float
    error_rate: float
    latency_ms: dict[str, float]  # p50..p99.9, mean, max over OK responses
    lag_ms: dict[str, float]  # open loop: actual - scheduled send
    errors: dict[str, int]
    offered_rps: float | None
    client_cpu: float  # client CPU seconds per wall second, summed over workers
    valid: bool
    client_priority: str = ""
    invalid_reason: str = ""
    #: Mixed deadlines: SLO attainment of the requests due in each (key: ms).
    slo_by_deadline_ms: dict[str, float] = field(default_factory=dict)


@dataclass
class LoadResult:
    """Everything one load point measured; picklable, mergeable."""

    mode: Literal["closed", "open"]
    target: str
    model: str
    rows_per_request: int
    duration_s: float  # the measured window
    deadline_s: float | None  # the longest; each sample carries its own
    concurrency: int | None
    offered_rps: float | None
    workers: int
    samples: Samples
    client_cpu_s: float = 0.0
    error_details: dict[str, str] = field(default_factory=dict)
    worker_failures: list[str] = field(default_factory=list)
    #: Scheduling priority the load workers got (see ``raise_priority``).
    client_priority: str = ""

    @classmethod
    def merge(cls, parts: Sequence[LoadResult]) -> LoadResult:
        first = parts[0]
        details: dict[str, str] = {}
        for p in parts:
            details.update(p.error_details)
        return dataclasses.replace(
            first,
            workers=sum(p.workers for p in parts),
            concurrency=None
            if first.concurrency is None
            else sum(p.concurrency or 0 for p in parts),
            offered_rps=None
            if first.offered_rps is None
            else sum(p.offered_rps or 0 for p in parts),
            samples=Samples.concat([p.samples for p in parts]),
            client_cpu_s=sum(p.client_cpu_s for p in parts),
            error_details=details,
            worker_failures=[f for p in parts for f in p.worker_failures],
            client_priority=", ".join(sorted({p.client_priority for p in parts})),
        )

    def summary(self, lag_limit_ms: float = 1.0) -> Summary:
        s, window = self.samples, self.duration_s
        ok = s.status == 0
        done_at = s.sent + np.nan_to_num(s.latency, nan=np.inf)
        in_window = done_at <= window
        deadline = s.deadline
        timely = ok & (s.latency <= deadline)
        refused = np.isin(s.status, list(_REFUSALS)) | (
            (s.status == _DEADLINE) & (s.latency < deadline)
        )
        n = max(1, len(s))
        admitted = len(s) - int(np.count_nonzero(s.refused))
        lat = percentiles(s.latency[ok] * 1e3)
        latency = {f"p{q:g}": v for q, v in zip(PERCENTILES, lat, strict=True)}
        latency["mean"] = float(np.mean(s.latency[ok]) * 1e3) if ok.any() else math.nan
        latency["max"] = float(np.max(s.latency[ok]) * 1e3) if ok.any() else math.nan
        lag: dict[str, float] = {}
        valid, reason = not self.worker_failures, "; ".join(self.worker_failures)
        if self.mode == "open" and len(s):
            lags = (s.sent - s.scheduled) * 1e3
            p50, p99 = percentiles(lags, (50, 99))
            lag = {"p50": p50, "p99": p99, "max": float(lags.max())}
            if p99 > lag_limit_ms:
                valid = False
                reason = f"p99 send lag {p99:.2f} ms > {lag_limit_ms:g} ms: client fell behind"
        if not len(s):
            valid, reason = False, reason or "no requests were sent"
        errors: dict[str, int] = {}
        for code, count in zip(*np.unique(s.status[~ok], return_counts=True), strict=True):
            errors[STATUS_NAMES.get(int(code), str(code))] = int(count)
        ok_in_window = int(np.count_nonzero(ok & in_window))
        by_deadline: dict[str, float] = {}
        kinds = np.unique(deadline[np.isfinite(deadline)])
        for due in kinds if kinds.size > 1 else ():
            mine = deadline == due
            by_deadline[deadline_key(due)] = float(np.count_nonzero(timely & mine) / mine.sum())
        return Summary(
            sent=len(s),
            sent_rps=len(s) / window,
            ok=int(ok.sum()),
            throughput_rps=ok_in_window / window,
            rows_per_s=ok_in_window * self.rows_per_request / window,
            goodput_rps=int(np.count_nonzero(timely & in_window)) / window,
            slo_attainment=int(timely.sum()) / n,
            refusal_rate=int(refused.sum()) / n,
            admitted_on_time=int(timely.sum()) / admitted if admitted else math.nan,
            error_rate=int((~ok).sum()) / n,
            latency_ms=latency,
            lag_ms=lag,
            errors=errors,
            offered_rps=self.offered_rps,
            client_cpu=self.client_cpu_s / window if window > 0 else 0.0,
            valid=valid,
            invalid_reason="" if valid else reason,
            client_priority=self.client_priority,
            slo_by_deadline_ms=by_deadline,
        )


# --------------------------------------------------------------------------- worker


#: Closed loop: how many mixed deadlines a worker draws and cycles through.
_CLOSED_DEADLINES = 4096


@dataclass(frozen=True)
class _Job:
    target: str
    workload: Workload
    mode: Literal["closed", "open"]
    duration_s: float
    warmup_s: float
    drain_s: float
    concurrency: int = 0
    offsets: np.ndarray | None = None  # open loop: this worker's share of the schedule
    deadlines: np.ndarray | None = None  # open loop: each offset's deadline (s)
    offered_rps: float | None = None
    priority: str = "normal"


class _Recorder:
    """Appends to plain lists (cheapest per request) and builds Samples at the end."""

    def __init__(self, t0: float, skip_before: float) -> None:
        self.t0, self.skip_before = t0, skip_before
        self.scheduled: list[float] = []
        self.sent: list[float] = []
        self.latency: list[float] = []
        self.status: list[int] = []
        self.refused: list[bool] = []
        self.deadline: list[float] = []
        self.details: dict[str, str] = {}

    def add(
        self,
        scheduled: float,
        sent: float,
        done: float,
        deadline: float,
        code: int,
        detail: str = "",
    ) -> None:
        if scheduled - self.t0 < self.skip_before:
            return  # warm-up
        self.deadline.append(deadline)
        self.scheduled.append(scheduled - self.t0 - self.skip_before)
        self.sent.append(sent - self.t0 - self.skip_before)
        self.latency.append(done - sent if code != UNFINISHED else math.nan)
        self.status.append(code)
        self.refused.append(refused_at_arrival(code, detail))
        if code and detail:
            self.details.setdefault(STATUS_NAMES.get(code, str(code)), detail[:200])

    def samples(self) -> Samples:
        return Samples(
            np.asarray(self.scheduled),
            np.asarray(self.sent),
            np.asarray(self.latency),
            np.asarray(self.status, dtype=np.int16),
            np.asarray(self.refused, dtype=bool),
            np.asarray(self.deadline, dtype=np.float64),
        )


def _method(channel: grpc.aio.Channel, style: str) -> Callable[..., Any]:
    if style == "stub":
        from inferd.protos import grpc_service_pb2 as pb
        from inferd.protos import grpc_service_pb2_grpc as pb_grpc

        stub_call = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer

        def call(payload: bytes, timeout: float | None = None) -> Any:
            return stub_call(pb.ModelInferRequest.FromString(payload), timeout=timeout)

        return call
    return channel.unary_unary(INFER_METHOD, request_serializer=None, response_deserializer=None)


async def _run_job(job: _Job, ready: Callable[[], float]) -> tuple[Samples, dict[str, str], float]:
    """Connect, warm the channel, wait for the common start, run, drain."""
    wl = job.workload
    payloads = wl.requests()
    options = [
        ("grpc.max_send_message_length", 1 << 30),
        ("grpc.max_receive_message_length", 1 << 30),
    ]
    async with grpc.aio.insecure_channel(job.target, options=options) as channel:
        method = _method(channel, wl.call_style)
        await channel.channel_ready()
        # Precomputed so that a request only indexes: open loop, one per
        # arrival; closed loop, a cycle drawn from the worker's seed.
        if job.deadlines is not None:
            dues: list[float] = job.deadlines.tolist()
        else:
            dues = wl.deadlines_s(_CLOSED_DEADLINES, wl.seed).tolist()
        timeouts = [d if wl.grpc_timeout and math.isfinite(d) else None for d in dues]
        t0 = ready()  # shared monotonic start (all workers)
        end = t0 + job.warmup_s + job.duration_s
        rec = _Recorder(t0, job.warmup_s)
        inflight: set[asyncio.Task[None]] = set()
        counter = 0

        async def one(scheduled: float, i: int) -> None:
            payload = payloads[i % len(payloads)]
            k = i % len(dues)
            due = dues[k]
            sent = time.monotonic()
            try:
                await method(payload, timeout=timeouts[k])
                rec.add(scheduled, sent, time.monotonic(), due, 0)
            except grpc.aio.AioRpcError as err:
                code, detail = err.code().value[0], err.details() or ""
                rec.add(scheduled, sent, time.monotonic(), due, code, detail)
            except asyncio.CancelledError:
                rec.add(scheduled, sent, 0.0, due, UNFINISHED)
                raise
            except Exception as exc:  # a client-side failure still counts as an answer
                rec.add(scheduled, sent, time.monotonic(), due, _UNKNOWN, repr(exc))

        cpu0 = time.process_time()
        await asyncio.sleep(max(0.0, t0 - time.monotonic()))
        if job.mode == "closed":

            async def user() -> None:
                nonlocal counter
                while True:
                    now = time.monotonic()
                    if now >= end:
                        return
                    counter += 1
                    await one(now, counter - 1)

            inflight = {asyncio.ensure_future(user()) for _ in range(job.concurrency)}
        else:
            assert job.offsets is not None
            await _paced(job.offsets + t0, one, inflight)
        await asyncio.sleep(max(0.0, end - time.monotonic()))
        if inflight:
            # Hard stop: what is still unanswered after the drain is cancelled.
            _, pending = await asyncio.wait(inflight, timeout=job.drain_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        cpu = time.process_time() - cpu0
    return rec.samples(), rec.details, cpu


async def _paced(
    due: np.ndarray,
    one: Callable[[float, int], Any],
    inflight: set[asyncio.Task[None]],
) -> None:
    """Start ``one(t, i)`` at each monotonic time ``t = due[i]``; returns once all started."""
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    cursor = 0

    def fire() -> None:
        # Runs on the loop: start everything that is due by now.
        nonlocal cursor
        now = time.monotonic()
        while cursor < len(due) and due[cursor] <= now:
            task = loop.create_task(one(float(due[cursor]), cursor))
            inflight.add(task)
            task.add_done_callback(inflight.discard)
            cursor += 1
        if cursor >= len(due):
            done.set()

    stop = threading.Event()

    def timer() -> None:
        for t in due:
            delay = float(t) - time.monotonic()
            if delay > 0 and stop.wait(delay):
                return
            loop.call_soon_threadsafe(fire)

    thread = threading.Thread(target=timer, name="loadgen-pacer", daemon=True)
    if len(due):
        thread.start()
    else:
        done.set()
    try:
        await done.wait()
    finally:
        stop.set()


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """uvloop when installed (cheaper per request), else asyncio."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def raise_priority(wanted: str) -> str:
    """Best effort, for this process and the threads it starts later; returns
    what was applied. On a small shared machine a normal-priority client waits
    for the server's threads (EEVDF slices are ms long) and falls behind its
    schedule; the client is event-driven and needs little CPU, so running it
    first costs the server little, and the kernel's RT throttling bounds it."""
    if wanted == "realtime":
        try:
            os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(1))
            return "realtime (SCHED_RR 1)"
        except (OSError, AttributeError):
            wanted = "nice"  # not root, or not Linux
    if wanted == "nice":
        try:
            os.nice(-10)
            return "nice -10"
        except OSError:
            pass
    return "normal"


def _worker(job: _Job, ready_q: Any, start_q: Any, result_q: Any) -> None:
    """Process entry point: report ready, take the common start time, run."""
    priority = raise_priority(job.priority)  # before any thread starts: they inherit it
    # A pacer thread waking mid-iteration would otherwise wait up to 5 ms for the GIL.
    sys.setswitchinterval(2e-4)

    def ready() -> float:
        ready_q.put(True)
        return float(start_q.get())

    try:
        samples, details, cpu = run_loop(_run_job(job, ready))
        result_q.put(("ok", samples, details, cpu, priority))
    except BaseException as exc:  # reported to the parent, never lost
        ready_q.put(False)
        result_q.put(("error", f"{type(exc).__name__}: {exc}", {}, 0.0, priority))


# --------------------------------------------------------------------------- public API

#: Scheduling priority asked for the load workers: realtime | nice | normal.
CLIENT_PRIORITY = "realtime"
START_MARGIN_S = 0.2  # time for every worker to receive the start time
STARTUP_TIMEOUT_S = 60.0


def _run(jobs: list[_Job], target: str, workload: Workload) -> LoadResult:
    ctx = mp.get_context("spawn")
    ready_q, result_q = ctx.Queue(), ctx.Queue()
    start_qs = [ctx.Queue() for _ in jobs]
    procs = [
        ctx.Process(target=_worker, args=(job, ready_q, sq, result_q), daemon=True)
        for job, sq in zip(jobs, start_qs, strict=True)
    ]
    for p in procs:
        p.start()
    failures: list[str] = []
    parts: list[LoadResult] = []
    job0 = jobs[0]
    try:
        for _ in procs:
            if not ready_q.get(timeout=STARTUP_TIMEOUT_S):
                break
        start = time.monotonic() + START_MARGIN_S
        for sq in start_qs:
            sq.put(start)
        hard_stop = start + job0.warmup_s + job0.duration_s + job0.drain_s + 30
        for job in jobs:
            try:
                status, samples, details, cpu, priority = result_q.get(
                    timeout=max(1.0, hard_stop - time.monotonic())
                )
            except queue.Empty:
                failures.append("a load worker did not finish in time")
                continue
            if status != "ok":
                failures.append(f"load worker failed: {samples}")
                continue
            parts.append(
                LoadResult(
                    mode=job.mode,
                    target=target,
                    model=workload.model,
                    rows_per_request=workload.rows,
                    duration_s=job.duration_s,
                    deadline_s=_seconds(workload.longest_deadline_ms),
                    concurrency=job.concurrency if job.mode == "closed" else None,
                    offered_rps=job.offered_rps,
                    workers=1,
                    samples=samples,
                    client_cpu_s=cpu,
                    error_details=details,
                    client_priority=priority,
                )
            )
    except queue.Empty:
        failures.append("load workers did not start within 60 s")
    finally:
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join()
    if not parts:
        empty = LoadResult(
            job0.mode,
            target,
            workload.model,
            workload.rows,
            job0.duration_s,
            _seconds(workload.longest_deadline_ms),
            None,
            None,
            0,
            Samples.empty(),
        )
        parts = [empty]
    merged = LoadResult.merge(parts)
    merged.worker_failures = failures
    return merged


def _seconds(ms: float | None) -> float | None:
    return None if ms is None else ms / 1e3


def _drain_s(workload: Workload, drain_s: float | None) -> float:
    if drain_s is not None:
        return drain_s
    return 2.0 + (workload.longest_deadline_ms or 0) / 1e3


def run_closed(
    target: str,
    workload: Workload,
    *,
    concurrency: int,
    duration_s: float,
    warmup_s: float = 0.5,
    workers: int = 1,
    drain_s: float | None = None,
    allow_remote: str | None = None,
    priority: str = CLIENT_PRIORITY,
) -> LoadResult:
    """``concurrency`` requests always in flight for ``duration_s`` (after a warm-up)."""
    check_target(target, allow_remote)
    workers = max(1, min(workers, concurrency))
    shares = [concurrency // workers + (i < concurrency % workers) for i in range(workers)]
    drain = _drain_s(workload, drain_s)
    jobs = [
        _Job(
            target,
            dataclasses.replace(workload, seed=workload.seed + i),
            "closed",
            duration_s,
            warmup_s,
            drain,
            concurrency=c,
            priority=priority,
        )
        for i, c in enumerate(shares)
    ]
    return _run(jobs, target, workload)


def run_open(
    target: str,
    workload: Workload,
    *,
    arrival: Arrival,
    duration_s: float,
    warmup_s: float = 0.5,
    workers: int = 1,
    drain_s: float | None = None,
    allow_remote: str | None = None,
    seed: int = 0,
    priority: str = CLIENT_PRIORITY,
) -> LoadResult:
    """Requests sent at the times of one realisation of ``arrival`` (open loop:
    a slow server does not slow the sender)."""
    check_target(target, allow_remote)
    offsets = schedule(arrival, warmup_s + duration_s, seed)
    deadlines = workload.deadlines_s(len(offsets), seed)
    drain = _drain_s(workload, drain_s)
    workers = max(1, workers)
    jobs = [
        _Job(
            target,
            dataclasses.replace(workload, seed=workload.seed + i),
            "open",
            duration_s,
            warmup_s,
            drain,
            offsets=offsets[i::workers],
            deadlines=deadlines[i::workers],  # each arrival keeps its deadline
            offered_rps=arrival.rate / workers,
            priority=priority,
        )
        for i in range(workers)
    ]
    return _run(jobs, target, workload)
