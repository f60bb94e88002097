"""The admission margin: what admission adds to its finish prediction,
learnt from how late admitted requests really finished."""

from __future__ import annotations

import collections
import math

from inferd.server.scheduler.options import ADMISSION_MODES


class Margin:
    """What admission adds to its prediction, learnt from recent prediction
    errors (answer - arrival - prediction - deliberate holds, the answer
    taken when the caller's coroutine resumes) as a line over the
    prediction: the quantile chosen by the offered load is taken among the
    requests with the shorter half of the predictions and among the longer
    half, and the line goes through both (its slope never negative; past
    the longer half's median prediction it rises at most ``MAX_SLOPE``, and
    below the load ramp only as the longest quarter of the predictions
    shows); the margin is never negative. ``seconds(predicted)`` applies it.

    A line because the error has two parts: time outside the engine that
    every request spends (event loop, gRPC, thread hops), and a stretch of
    every batch a request waits for when the CPU is shared, which grows with
    the work ahead. One quantile in seconds for every request is too small
    for those predicted near their deadline, the only ones it decides; one
    ratio of the prediction turns the fixed part into a large pad for long
    predictions (docs/experiments/admission-margin-line.md).

    The latency model measures engine time only. Well below capacity
    admitted requests have room before their deadlines, so the margin only
    needs to correct the error's bias: at the ramp's start the median
    (``Q_LOW``: refuse what is more likely late than not), on an idle engine
    ``idle_quantile`` (balanced admission: the p25), rising linearly between.
    There a refusal is a request certainly not answered in time, while
    admitting one that may be late costs nobody else engine time: the p75
    refused what Triton's batcher answered
    (docs/experiments/admission-deadline-classes.md), and on a real server,
    whose errors spread wider than an engine of known speed's, the median
    refused a fifth of the 15 ms requests of a mixed load at 0.4x that static
    batching answered (docs/experiments/idle-quantile.md). The error's tail
    there is host stalls, which no refusal prevents. Under overload every admitted
    request is predicted just inside its deadline, so the margin must cover
    the tail (``Q_HIGH``) and then some (``OVERLOAD_RESERVE``). Quantile and
    reserve rise linearly with the offered load on the engine, over the
    admission mode's ``ramp`` of what it serves within the latency budget
    (``options.ADMISSION_MODES``; ``strict`` ramps earlier). A fixed
    quantile either refuses too much at light load or answers late under
    overload, and steering by the late fraction refuses whenever the host
    stalls (docs/experiments/admission-margin-quantile.md). Errors older than
    ``horizon_s`` are forgotten, so a stall does not keep refusing once it is
    over; an idle engine always admits, and those requests keep the samples
    coming."""

    Q_LOW = 0.5
    Q_HIGH = 0.99
    #: Seconds added at full overload on top of the quantile: the error
    #: drifts within the window the samples cover, so a p99 of past errors
    #: alone still answers some admitted requests late.
    OVERLOAD_RESERVE = 0.003
    #: Errors each half needs before the line gets a slope (else one quantile).
    MIN_HALF = 8
    #: How steeply the line may rise past the longer half's median
    #: prediction, beyond the data it was fitted on: the halves' medians lie
    #: close together at light load, so noise in two quantiles gives steep
    #: slopes that refuse requests arriving to a near-empty queue. Within the
    #: fitted range a steep line stands: a latency model far off (a host whose
    #: CPU others take) needs it (docs/experiments/admission-margin-line.md).
    #: Below the ramp it rises there only as steeply as the errors of the
    #: longest quarter of the predictions do: on a real server those (behind
    #: a running batch) were no larger than the longer half's, and the rise
    #: refused tight requests static batching answered
    #: (docs/experiments/idle-quantile.md).
    MAX_SLOPE = 0.5

    def __init__(
        self,
        window: int = 512,
        every: int = 16,
        horizon_s: float = 2.0,
        *,
        ramp: tuple[float, float] = ADMISSION_MODES["balanced"].ramp,
        idle_quantile: float = ADMISSION_MODES["balanced"].idle_quantile,
    ) -> None:
        self._low, self._high = ramp
        self._idle_quantile = idle_quantile
        #: (when, predicted s, error s) of recent admitted requests.
        self.errors: collections.deque[tuple[float, float, float]] = collections.deque(
            maxlen=window
        )
        self._every = every
        self._horizon_s = horizon_s
        self._count = 0
        #: Recent (prediction, error) pairs in order of prediction, and the
        #: shorter and longer half of them: (median prediction, sorted errors).
        self._ranked: list[tuple[float, float]] = []
        self._halves: list[tuple[float, list[float]]] = []
        #: The longest quarter of the predictions (median prediction, sorted
        #: errors): how the error goes on past the longer half's median.
        self._top: tuple[float, list[float]] | None = None
        #: The line's slope past ``_reach`` below the ramp: what the longest
        #: quarter shows, within 0..``MAX_SLOPE``.
        self._past = 0.0
        #: The same errors, sorted (None: not yet since they changed): the
        #: quantile when the halves give no line.
        self._sorted: list[float] | None = None
        #: The error quantile in use, and the line it gives: a + b x prediction.
        self.quantile = idle_quantile
        self._share = 0.0
        self.a = 0.0
        self.b = 0.0
        #: The longer half's median prediction: past it the line rises at
        #: most ``MAX_SLOPE`` (under load) or ``_past`` (below the ramp).
        self._reach = math.inf

    def add(self, error: float, now: float, predicted: float) -> None:
        self.errors.append((now, predicted, error))
        self._count += 1
        if self._count % self._every == 0:
            errors = self.errors
            while errors and errors[0][0] < now - self._horizon_s:
                errors.popleft()
            ranked = self._ranked = sorted((p, e) for _, p, e in errors)
            half = len(ranked) // 2
            parts = (ranked[:half], ranked[half:]) if half else (ranked,)
            self._halves = [(part[len(part) // 2][0], sorted(e for _, e in part)) for part in parts]
            top = parts[-1][len(parts[-1]) // 2 :] if half else []
            self._top = (top[len(top) // 2][0], sorted(e for _, e in top)) if top else None
            self._sorted = None
            self._pick()

    def set_load(self, load: float) -> None:
        """``load``: offered work as a fraction of what the engine can do."""
        share = min(1.0, max(0.0, (load - self._low) / (self._high - self._low)))
        if share > 0:
            quantile = self.Q_LOW + (self.Q_HIGH - self.Q_LOW) * share
        else:
            below = max(0.0, load / self._low) if self._low > 0 else 1.0
            quantile = self._idle_quantile + (self.Q_LOW - self._idle_quantile) * below
        if abs(quantile - self.quantile) > 0.005:
            self.quantile = quantile
            self._share = share
            self._pick()

    @staticmethod
    def _at(ordered: list[float], quantile: float) -> float:
        return ordered[min(len(ordered) - 1, int(quantile * len(ordered)))]

    def _pick(self) -> None:
        """At ``Q_LOW``, the line through both halves' quantiles. Above it,
        the slope stays the one at ``Q_LOW`` and the level is the chosen
        quantile of the errors less the slope's share: a slope between two
        high quantiles rests on the few largest errors of each half, and
        refused requests arriving to an empty queue
        (docs/experiments/admission-margin-line.md)."""
        halves = self._halves
        if not halves:
            return
        if len(halves) == 2 and len(halves[0][1]) >= self.MIN_HALF:
            (x_short, short), (x_long, long) = halves
            if x_long - x_short > 1e-4:
                q = min(self.quantile, self.Q_LOW)
                y_short = self._at(short, q)
                y_long = self._at(long, q)
                b = max(0.0, (y_long - y_short) / (x_long - x_short))
                self.b = b
                self._reach = x_long
                self._past = 0.0
                top = self._top
                if top is not None and top[0] - x_long > 1e-4:
                    rise = (self._at(top[1], q) - y_long) / (top[0] - x_long)
                    self._past = min(self.MAX_SLOPE, max(0.0, rise))
                if self.quantile <= self.Q_LOW:
                    self.a = y_short - b * x_short
                else:
                    residuals = sorted(e - b * p for p, e in self._ranked)
                    self.a = self._at(residuals, self.quantile)
                return
        # Too few errors, or predictions all alike: one quantile of them all.
        if self._sorted is None:
            self._sorted = sorted(e for _, e in self._ranked)
        self.a = self._at(self._sorted, self.quantile)
        self.b = 0.0
        self._reach = math.inf

    def seconds(self, predicted: float) -> float:
        """The margin for a request predicted to take ``predicted`` seconds."""
        within = min(predicted, self._reach)
        past = min(self.b, self.MAX_SLOPE) if self._share > 0 else self._past
        line = self.a + self.b * within + past * (predicted - within)
        return max(0.0, line) + self._share * self.OVERLOAD_RESERVE
