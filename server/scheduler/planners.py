"""The dispatch plans: when a slot is free, whether to dispatch and how big.

Every difference between the policies sits here, behind ``Planner``: how
the queue is ordered, which deadline a request gets, whether admission
predicts its finish, which queued work is hopeless, and each batch's size.
``AdaptivePlanner`` plans against deadlines and the arrival rate;
``StaticPlanner`` reproduces Triton's dynamic batcher.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from inferd.server.scheduler.latency import LatencyModel
from inferd.server.scheduler.options import BatchingOptions

#: Share of a request's budget the adaptive planner may spend waiting for a
#: fuller batch: the engine idles meanwhile (docs/experiments/adaptive-wait-share.md).
MAX_WAIT_SHARE = 0.1

#: While the event loop thread spends more than ``LOOP_BUSY_FROM`` of its time
#: on CPU, the adaptive planner waits for fuller batches than the engine needs:
#: each batch costs the loop and an engine thread wake-ups that a fuller batch
#: shares, and with a fast engine the loop is what runs out. The longest such
#: wait (from the head's arrival) grows with the share, up to
#: ``LOOP_BOUND_WAIT_S`` at ``LOOP_BUSY_FULL`` (docs/experiments/loop-bound-batching.md).
LOOP_BUSY_FROM = 0.5
LOOP_BUSY_FULL = 0.8
LOOP_BOUND_WAIT_S = 0.002
#: Such holds go on while they gather rows: at least ``FULLER_MIN_GAIN`` rows
#: each on average. A caller sending one request at a time, or a model with
#: little traffic on a loop kept busy by others, gathers none; it then holds
#: once every ``FULLER_PROBE_S`` to find out whether holding pays again.
FULLER_MIN_GAIN = 0.5
FULLER_PROBE_S = 0.25

#: Most time the adaptive planner keeps before a deadline for work outside the
#: engine (gRPC, the event loop, merging), as measured on 2 busy cores; also
#: what it keeps before the latency model has seen batches run. It does not grow
#: with the admission margin: keeping the margin free before every deadline
#: shrank batches under load, losing the throughput the load needed.
MIN_RESERVE_S = 0.003
#: Least reserve, and what is kept on top of the p95 of the batches' measured
#: time outside the engine (``LatencyModel.outside``): the part after the batch
#: (the caller's coroutine resuming, encoding) that the batches do not see. A
#: fixed 3 ms refused and cut for time a quiet host never spends
#: (docs/experiments/learnt-reserve.md).
RESERVE_FLOOR_S = 0.001


#: A batch is cut short for its head only when some of it is due this many of
#: the batch's own times after the head: requests due about when the head is
#: share its fate, and cutting for it pushed them a batch later and cost the
#: throughput a burst needed (docs/experiments/cut-spread.md).
CUT_SPREAD = 2.0


@dataclass(frozen=True, slots=True)
class Plan:
    """What to do now: dispatch ``size`` rows (``take`` real ones), or wait."""

    size: int = 0
    take: int = 0
    reason: str = ""
    #: Seconds of slack the earliest request had at dispatch (inf: no deadline).
    slack: float = math.inf
    #: When waiting: the monotonic time to plan again at the latest.
    wake_at: float | None = None


@dataclass(frozen=True, slots=True)
class QueueState:
    """What a planner sees when an execution slot is free."""

    #: Rows queued (all shapes).
    rows: int
    head_deadline: float
    head_arrival: float
    #: Rows/s offered to the model (refused ones included).
    arrival_rate: float
    #: Returns the first queued requests in dispatch order, as (rows,
    #: deadline), enough for two batches; called only when a batch may need
    #: cutting (building the view costs more than the rest of a plan).
    queue: Callable[[], Sequence[tuple[int, float]]] = tuple
    #: Seconds to its deadline of the tightest recent arrival, and its rows,
    #: when batches are to be kept short for such requests (``tight``): inf
    #: when not.
    tight_s: float = math.inf
    tight_rows: int = 0
    #: Recent share of the event loop thread's time spent on CPU (``LoopLoad``;
    #: 0 when not measured).
    loop_busy: float = 0.0


class FullerHolds:
    """How many rows recent holds for fuller batches gathered, on average."""

    #: Weight of the newest hold in the average.
    WEIGHT = 0.3

    def __init__(self) -> None:
        self.gain = 1.0  # untried: hold, and learn
        self._probe_at = -math.inf

    def worth(self, now: float) -> bool:
        """Whether to hold now: the average pays, or it is time to probe."""
        if self.gain >= FULLER_MIN_GAIN:
            return True
        if now >= self._probe_at:
            self._probe_at = now + FULLER_PROBE_S
            return True
        return False

    def gathered(self, rows: int) -> None:
        self.gain += self.WEIGHT * (max(0, rows) - self.gain)


class Planner:
    """Decides, when a slot is free, whether to dispatch and how big; and
    everything else that differs between policies."""

    #: Queue order after priority: True, by deadline (EDF); False, by arrival.
    by_deadline: bool = True
    #: Whether admission refuses requests predicted to finish late (else it
    #: admits everything the queue holds).
    predicts_finish: bool = True

    def __init__(self, options: BatchingOptions, latency: LatencyModel) -> None:
        self.options = options
        self.latency = latency
        self._reserve: float | None = None

    @property
    def reserve(self) -> float:
        """Seconds kept free before each deadline for what happens outside
        the engine: the measured p95 plus ``RESERVE_FLOOR_S``, within
        ``RESERVE_FLOOR_S``..``MIN_RESERVE_S`` (set: a fixed figure). The
        static policy ignores it, as Triton's does."""
        if self._reserve is not None:
            return self._reserve
        outside = self.latency.outside()
        if outside is None:
            return MIN_RESERVE_S
        return min(MIN_RESERVE_S, outside + RESERVE_FLOOR_S)

    @reserve.setter
    def reserve(self, seconds: float) -> None:
        self._reserve = seconds

    def plan(self, now: float, state: QueueState) -> Plan:
        raise NotImplementedError

    def held_for_fuller(self, rows: int) -> None:
        """A hold for a fuller batch (a plan with reason ``fuller``) ended:
        ``rows`` joined the queue meanwhile."""

    def deadline(self, requested: float | None, now: float) -> float:
        """When the answer to a request arriving at ``now`` must be ready,
        given the caller's deadline (None: none); inf when never."""
        raise NotImplementedError

    def hopeless(self, deadline: float, rows: int, now: float, *, busy: bool) -> bool:
        """Whether queued work due at ``deadline`` must be expired unrun
        (``busy``: some batch is running)."""
        return deadline <= now

    def batch_size(self, rows: int) -> int:
        """The engine batch size that runs ``rows`` real rows."""
        return self.cover(rows) if self.options.batched else rows

    def fit(self, rows: int) -> int:
        """Largest dispatchable size <= rows (at least the smallest size)."""
        sizes = self.options.sizes
        best = sizes[0]
        for s in sizes:
            if s <= rows:
                best = s
        return best

    def cover(self, rows: int) -> int:
        """Smallest dispatchable size >= rows (padding), else the largest."""
        return self.options.cover(rows)


class AdaptivePlanner(Planner):
    """Plan each batch against the earliest deadline and the arrival rate.

    With a free slot and ``rows`` queued it dispatches at once, unless the
    arrival rate says the engine could not keep up at this batch size (its
    utilization would pass ``options.utilization``); then it waits for the
    smallest batch that keeps up, but never past the moment the earliest
    deadline would be missed (its slack), a share of the head's budget
    (``MAX_WAIT_SHARE``) or Triton's ``max_queue_delay_microseconds`` when
    set. While the event loop thread is the bottleneck it also holds a batch
    the engine would take for more rows (``fuller_until``), as long as such
    holds gather some (``FullerHolds``). Batches are cut where the most queued
    requests finish on time (``cut``); padding up to an engine size is used
    only when the padded batch still fits.
    """

    def __init__(self, options: BatchingOptions, latency: LatencyModel) -> None:
        super().__init__(options, latency)
        self.fuller = FullerHolds()

    def deadline(self, requested: float | None, now: float) -> float:
        """The caller's deadline or the model's budget, whichever is earlier,
        less the time the answer needs to reach the caller."""
        deadline = requested if requested is not None else math.inf
        budget = self.options.budget_s
        if budget is not None:
            deadline = min(deadline, now + budget)
        return deadline - self.options.reply_allowance_s

    def hopeless(self, deadline: float, rows: int, now: float, *, busy: bool) -> bool:
        """Late already, or (while busy) predicted to finish late even alone.
        An idle scheduler runs its head, so that a stale latency model can
        never lock a model shut."""
        if deadline <= now:
            return True
        return busy and deadline <= now + self.latency.mean(rows)

    def plan(self, now: float, state: QueueState) -> Plan:
        opts, lat = self.options, self.latency
        rows, head_arrival, arrival_rate = state.rows, state.head_arrival, state.arrival_rate
        head_deadline = state.head_deadline - self.reserve
        largest = opts.largest
        take = min(rows, largest, self.tight_cap(now, state))
        if now + lat.mean(self.cover(take)) > head_deadline:
            # The head would be late in the whole batch: weigh cutting it.
            # (Otherwise a cut only delays the rest. A batch cut short needs
            # no rule against waiting: a fuller batch would make the head late
            # too, so the slack check below dispatches it.)
            take = self.cut(now, state.queue(), take)
        size = self.cover(take)
        if size != take and now + lat.high(size) > head_deadline:
            size = take = self.fit(take)  # padding would make the head late
        slack = head_deadline - now - lat.high(size)
        if take >= largest:
            return Plan(size, take, "full", slack)
        if slack <= 0:
            return Plan(size, take, "deadline", slack)
        target = self.keep_up_size(arrival_rate)
        if take >= target:
            # Only a batch that would take every queued row can grow by waiting.
            if take == min(rows, largest):
                fuller = self.fuller_until(state.loop_busy, head_arrival, head_deadline)
                if fuller > now and self.fuller.worth(now):
                    return Plan(reason="fuller", wake_at=fuller)
            return Plan(size, take, "ready", slack)
        # Waiting gathers about rate * t rows; stop waiting before slack runs out.
        target_slack = head_deadline - now - lat.high(self.cover(target))
        if target_slack <= 0:
            return Plan(size, take, "deadline", slack)
        wait_until = self.wait_until(head_arrival, head_deadline)
        if now >= wait_until:
            return Plan(size, take, "waited", slack)
        needed = (target - take) / arrival_rate if arrival_rate > 0 else math.inf
        wake_at = min(now + min(target_slack, needed), wait_until)
        if wake_at <= now:  # slack below the clock's resolution: no wait to time
            return Plan(size, take, "deadline", slack)
        return Plan(wake_at=wake_at)

    def held_for_fuller(self, rows: int) -> None:
        self.fuller.gathered(rows)

    def wait_until(self, head_arrival: float, head_deadline: float) -> float:
        """The latest a batch may wait for more rows. Waiting is a bet on
        arrivals; it is capped at a share of the head's budget so a lull never
        spends the slack that admission promised to callers, and at Triton's
        window (the longest any request waits) when the config sets one."""
        until = head_arrival + MAX_WAIT_SHARE * (head_deadline - head_arrival)
        if self.options.max_queue_delay_s > 0:
            until = min(until, head_arrival + self.options.max_queue_delay_s)
        return until

    def fuller_until(self, loop_busy: float, head_arrival: float, head_deadline: float) -> float:
        """While the event loop is the bottleneck (``LOOP_BUSY_FROM``), until
        when a batch the engine would take now waits for more rows (-inf: it
        does not); never past ``wait_until``, nor so long that a full batch
        would make the head late. Arrivals that fill it end the wait at once."""
        if loop_busy <= LOOP_BUSY_FROM:
            return -math.inf
        share = min(1.0, (loop_busy - LOOP_BUSY_FROM) / (LOOP_BUSY_FULL - LOOP_BUSY_FROM))
        until = min(
            head_arrival + share * LOOP_BOUND_WAIT_S, self.wait_until(head_arrival, head_deadline)
        )
        return min(until, head_deadline - self.latency.high(self.options.largest))

    def tight_cap(self, now: float, state: QueueState) -> int:
        """Most rows a batch may take so that the tightest recent arrival,
        landing just after it leaves, still finishes on time in the next one;
        never below what keeps up with the arrival rate (the engine must
        keep up first), no cap when the tight request cannot make it even
        behind the smallest batch, and none when the queued requests it
        leaves behind would then be late (``spares_the_rest``)."""
        if math.isinf(state.tight_s):
            return self.options.largest
        lat = self.latency
        tight_batch = lat.mean(self.cover(max(1, state.tight_rows)))
        budget = state.tight_s - self.reserve - tight_batch
        if lat.mean(self.options.largest) <= budget:
            return self.options.largest  # the usual case: no cap binds
        cap = 0
        for s in self.options.sizes:
            if lat.mean(s) > budget:
                break
            cap = s
        if cap == 0:
            return self.options.largest
        cap = max(cap, self.keep_up_size(state.arrival_rate))
        if cap < state.rows and not self.spares_the_rest(now, state, cap, tight_batch):
            return self.options.largest
        return cap

    def spares_the_rest(self, now: float, state: QueueState, cap: int, tight_batch: float) -> bool:
        """Whether the queued requests a batch capped at ``cap`` rows leaves
        behind still finish on time after it and a tight request's batch
        (typical times). Capping for a tight caller who may come must not
        make the loose ones who are here late: on a host whose batches
        stall, a 3 ms reserve capped batches at one request, the backlog
        grew in bursts and loose requests due in 50 ms ran late at a tenth
        of capacity (docs/experiments/tight-cap-rest.md)."""
        lat, largest = self.latency, self.options.largest
        total, rest, due = 0, 0, math.inf
        for rows, deadline in state.queue():
            if rest >= largest:
                break
            total += rows
            if total > cap:
                rest += rows
                due = min(due, deadline)
        if rest == 0:
            return True
        start = now + lat.mean(self.cover(cap)) + tight_batch
        return start + lat.mean(self.cover(min(rest, largest))) + self.reserve <= due

    def deferrable(self, queue: Sequence[tuple[int, float]], take: int) -> bool:
        """Whether some request of the first ``take`` rows is due more than
        ``CUT_SPREAD`` batch times after the head: only such a request is
        worth leaving to the next batch."""
        if not queue:
            return False
        head = latest = queue[0][1]
        total = 0
        for rows, deadline in queue:
            if total >= take:
                break
            latest = max(latest, deadline)
            total += rows
        return latest - head > CUT_SPREAD * self.latency.mean(self.cover(take))

    def cut(self, now: float, queue: Sequence[tuple[int, float]], take: int) -> int:
        """How many of ``take`` rows to run now: the cut (at a request
        boundary, in queue order) under which the most requests finish on
        time, counting this batch and the one after it, by mean engine times
        (the likeliest outcome); ties go to the larger batch. A smaller batch
        can save a tight head, but it also pushes the rest a whole batch
        later, which under load costs more requests than it saves. The
        reserve is not counted: counting it wrote off heads a smaller batch
        saves, and the tie then went to the whole batch, which made them late
        (docs/experiments/cut-count.md)."""
        lat, largest = self.latency, self.options.largest
        if not self.deferrable(queue, take):
            return take
        rows_before: list[int] = []
        total = 0
        for rows, _ in queue:
            rows_before.append(total)
            total += rows
        best_rows, best_score = 0, -1
        for k in range(1, len(queue) + 1):
            first = rows_before[k] if k < len(queue) else total
            if first > take:
                break
            end1 = now + lat.mean(self.cover(first))
            score = sum(1 for _, deadline in queue[:k] if deadline >= end1)
            rows2, later = 0, []
            for rows, deadline in queue[k:]:
                if rows2 + rows > largest:
                    break
                rows2 += rows
                later.append(deadline)
            second = 0
            if later:
                end2 = end1 + lat.mean(self.cover(rows2))
                second = sum(1 for deadline in later if deadline >= end2)
            if score + second >= best_score:
                best_rows, best_score = first, score + second
        return best_rows or take

    def keep_up_size(self, arrival_rate: float) -> int:
        """Smallest size whose throughput serves ``arrival_rate`` rows/s at the
        utilization target; 1 when the rate is unknown or low."""
        if arrival_rate <= 0:
            return 1
        for s in self.options.sizes:
            per_batch = self.latency.mean(s)
            if per_batch <= 0 or arrival_rate * per_batch / s <= self.options.utilization:
                return s
        return self.options.sizes[-1]


class StaticPlanner(Planner):
    """Triton's dynamic batcher: wait until the largest preferred size is
    queued or the oldest request has waited ``max_queue_delay``, then take the
    largest preferred size available (or everything up to max). Requests are
    served in arrival order within a priority, everything the queue holds is
    admitted, and only timed-out requests are dropped."""

    by_deadline = False
    predicts_finish = False

    def deadline(self, requested: float | None, now: float) -> float:
        """The caller's deadline or Triton's queue-policy timeout (no reply
        allowance: Triton's semantics)."""
        deadline = requested if requested is not None else math.inf
        timeout = self.options.queue_timeout_s
        if timeout is not None:
            deadline = min(deadline, now + timeout)
        return deadline

    def plan(self, now: float, state: QueueState) -> Plan:
        opts, rows, head_arrival = self.options, state.rows, state.head_arrival
        largest = opts.largest
        preferred = [p for p in opts.preferred_sizes if p <= largest]
        goal = preferred[-1] if preferred else largest
        if rows >= goal:
            return Plan(goal, goal, "full")
        due = head_arrival + opts.max_queue_delay_s
        if now >= due:
            fitting = [p for p in preferred if p <= rows]
            take = fitting[-1] if fitting else min(rows, largest)
            return Plan(take, take, "window")
        return Plan(wake_at=due)


def new_latency_model(options: BatchingOptions) -> LatencyModel:
    """The latency model a version plans with (its stall clip follows ``admission``)."""
    return LatencyModel(stall_clip=options.mode.stall_clip)


def make_planner(options: BatchingOptions, latency: LatencyModel) -> Planner:
    """The planner for ``options.policy`` (``none``: adaptive, one request per batch)."""
    if options.policy == "static":
        return StaticPlanner(options, latency)
    return AdaptivePlanner(options, latency)
