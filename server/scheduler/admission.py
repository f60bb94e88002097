"""Admission: refuse at arrival what cannot finish in time.

A request whose deadline cannot be met given the queue is refused at
arrival (DEADLINE_EXCEEDED, with the prediction in the message); a full
queue refuses with UNAVAILABLE and a retry hint. The prediction (typical
engine times of the batches ahead) is padded with a learnt margin
(``margin.Margin``), so time the latency model cannot see (event loop, a CPU
shared with other work) becomes refusals, not late answers; or with the
planner's reserve where that is larger (what admission promises is what the
planner plans for). A request that would join a queued, not yet full batch
must leave that batch on time for the requests already in it: admitting it
makes their batch bigger and slower. Likewise a request due sooner than
queued ones goes ahead of them only where that leaves them on time.
"""

from __future__ import annotations

import collections
import math
from typing import NoReturn

from inferd.server.errors import DeadlineExceeded, InvalidArgument, Unavailable
from inferd.server.observer import VersionObserver
from inferd.server.request import InferRequest
from inferd.server.scheduler.latency import LatencyModel
from inferd.server.scheduler.margin import Margin
from inferd.server.scheduler.options import BatchingOptions
from inferd.server.scheduler.planners import Planner
from inferd.server.scheduler.queue import Entry, RequestQueue
from inferd.server.scheduler.rates import BurstRate, Rate, WarmRate
from inferd.server.scheduler.records import Counters
from inferd.server.scheduler.slots import Slots
from inferd.server.scheduler.tight import NONE, TightArrivals, Tightest, deadline_class

#: How every admission refusal's message begins (load generators key on it).
ADMISSION_REFUSAL = "cannot finish within the deadline"

#: Seconds between recomputations of the engine's capacity under the budget
#: (``Admission.budget_capacity``): it follows the latency model, which
#: moves a little with every batch.
CAPACITY_REFRESH_S = 0.1
#: Steps in which a request's time to its deadline is read for its load.
CAPACITY_STEP_S = 0.0005
#: Below this share of the start of the margin's ramp the load is light:
#: nothing pads a prediction (``Admission.padded_finish``).
LIGHT_SHARE = 0.5
#: Seconds over which the tight cap reads the load (``WarmRate``): long
#: enough to see bursts and the lulls between them as one load, where the
#: 0.25 s average read a burst at a tenth of capacity as heavy and let full
#: batches run ahead of the tight requests that came with it
#: (docs/experiments/tight-cap-load.md).
SUSTAINED_TAU_S = 1.0
#: Admission is starving the engine when it admits fewer rows/s than this
#: fraction of what the engine could serve of the offered rows
#: (``Admission.starving``).
STARVED = 0.5


class Admission:
    """Admits or refuses each arriving request, and learns from the answers."""

    def __init__(
        self,
        options: BatchingOptions,
        latency: LatencyModel,
        planner: Planner,
        queue: RequestQueue,
        slots: Slots,
        counters: Counters,
        observer: VersionObserver,
    ) -> None:
        self.options = options
        self.latency = latency
        self.planner = planner
        self.queue = queue
        self.slots = slots
        self.counters = counters
        self.observer = observer
        #: Rows offered, refused ones included: the demand the planner sizes
        #: batches for and the load the margin reacts to (sizing batches for
        #: the admitted rate alone fed back: refusals made batches smaller,
        #: which cut throughput and caused more refusals).
        self.offered = BurstRate()
        #: Offered rows/s over a longer time: the load the tight cap reads.
        self.sustained = WarmRate(SUSTAINED_TAU_S)
        #: The tightest recent deadlines: what the planner keeps batches
        #: short for while the load is light.
        self.tight = TightArrivals()
        #: One margin per deadline class (``deadline_class``): a loose
        #: request's wait behind tighter ones that overtake it is no error of a
        #: tight request's prediction.
        self.margins: dict[int, Margin] = {}
        #: Rows/s within each deadline class's time (``capacity_within``),
        #: recomputed every ``CAPACITY_REFRESH_S``.
        self._capacity: dict[int, float] = {}
        #: Rows/s ahead of each tight class (``capacity_ahead_of``), by its
        #: seconds in steps of ``CAPACITY_STEP_S`` and rows; refreshed alike.
        self._capacity_ahead: dict[tuple[int, int], float] = {}
        self._capacity_at = -math.inf
        #: Rows admitted: what refusals leave the engine (``starving``). On a
        #: slower average than the offered rate it is compared with, so the
        #: first requests of a burst count as starving too: taken in on the
        #: idle margin (``Margin`` at no load) they fill batches (measured
        #: better than like for like, docs/experiments/admission-starvation.md).
        self.admitted_rows = Rate(0.5)
        self._starving = False
        #: The latest admitted requests, newest last: the batch a new request
        #: would join is made of the last queued ones (see ``batch_deadline``).
        self._admitted: collections.deque[Entry] = collections.deque(maxlen=options.largest)

    def admit(self, request: InferRequest, priority: int, deadline: float, now: float) -> float:
        """Refuse (raise) or admit a request queued at ``priority`` (the
        request's or the model's default); returns the predicted seconds to
        finish, before the margin (NaN when no prediction was needed)."""
        self.offered.add(request.rows, now)
        self.sustained.add(request.rows, now)
        if deadline < math.inf:
            self.tight.add(deadline - now, request.rows, now)
        levels = self.options.priority_levels
        if request.priority and levels and not 1 <= request.priority <= levels:
            raise InvalidArgument(f"parameter 'priority' must be between 1 and {levels}")
        # Requests handed ahead still wait for the engine: they count.
        queued = self.queue.count + self.slots.waiting_requests
        if queued >= self.options.max_queue:
            self.counters.refused["queue_full"] += 1
            self.observer.on_refused("queue_full")
            drain = self.backlog_seconds(now, 0)
            raise Unavailable(
                f"queue is full ({queued} requests); retry after about "
                f"{max(1.0, drain * 1e3):.0f} ms"
            )
        if not self.planner.predicts_finish or deadline == math.inf:
            return math.nan
        ahead = self.queue.rows_ahead(priority, deadline)
        predicted = self.backlog_seconds(now, request.rows, ahead)
        if deadline <= now:
            # Less time left than the answer needs to reach the caller: late
            # however idle the model is (the queue would expire it unrun).
            allowance = self.options.reply_allowance_s
            self.refuse_late(
                predicted,
                f"{max(0.0, deadline + allowance - now) * 1e3:.1f} ms left, within the "
                f"{allowance * 1e3:g} ms the answer needs to reach the caller",
            )
        seconds_left = deadline - now
        margin = self.margin_for(seconds_left)
        load = self.offered_load(now)
        margin.set_load(0.0 if self._starving else load)
        # Far below the margin's ramp (the load measured within this request's
        # time) a refusal saves nobody else engine time: refuse only what
        # typical engine times already make late.
        if not self.fits_two_full_batches(seconds_left):
            load = self.offered_load(now, seconds_left)
        light = self.is_light(load)
        if self.queue.count == 0 and self.slots.idle:
            # An idle model always tries: only running corrects a latency model
            # that learned pessimistic figures (e.g. warmup on a busy host),
            # or a margin learnt during a stall.
            return predicted
        finish = self.padded_finish(
            now, predicted, queued_behind=ahead > 0, margin=margin, light=light
        )
        if finish > deadline:
            self.refuse_late(finish - now, f"{max(0.0, deadline - now) * 1e3:.1f} ms left")
        if ahead < self.queue.rows and self.makes_queued_late(
            now, priority, deadline, request.rows, ahead
        ):
            self.refuse_late(
                finish - now,
                "and going ahead of queued requests due later would make one of them late",
                "overtakes",
            )
        batch_deadline = self.batch_deadline(request.rows)
        if finish > batch_deadline and (
            self.options.mode.whole_batch_rule
            or (
                self.finish_without(now) <= batch_deadline
                and not self.fits_next_batch(now, request.rows, deadline, margin, light)
            )
        ):
            self.refuse_late(
                finish - now,
                "and the queued batch it would join must finish within "
                f"{max(0.0, batch_deadline - now) * 1e3:.1f} ms for the requests already in it",
                "batch_deadline",
            )
        return predicted

    def admitted(self, entry: Entry) -> None:
        """``entry`` was admitted and is about to be queued."""
        self._admitted.append(entry)
        self.admitted_rows.add(entry.rows, entry.arrival)

    def learn(self, entry: Entry, finished: float, now: float) -> None:
        """Teach the margin how late a predicted ``entry`` finished
        (``finished``; ``now``: when it is learnt)."""
        if not math.isnan(entry.predicted):
            error = finished - entry.arrival - entry.predicted - entry.held
            self.margin_for(entry.deadline - entry.arrival).add(error, now, entry.predicted)

    @property
    def margin(self) -> Margin:
        """The margin of requests due within the model's latency budget."""
        budget = self.options.budget_s
        return self.margin_for(budget - self.options.reply_allowance_s if budget else math.inf)

    def margin_for(self, seconds_left: float) -> Margin:
        """The margin of requests due ``seconds_left`` after arriving."""
        key = deadline_class(seconds_left)
        margin = self.margins.get(key)
        if margin is None:
            mode = self.options.mode
            margin = self.margins[key] = Margin(ramp=mode.ramp, idle_quantile=mode.idle_quantile)
        return margin

    def padded_finish(
        self,
        now: float,
        predicted: float,
        *,
        queued_behind: bool = True,
        margin: Margin | None = None,
        light: bool = False,
    ) -> float:
        """When work predicted to take ``predicted`` s would finish, as
        admission counts it. The margin covers what the engine-time
        prediction misses. Behind queued work, the planner's reserve pads
        too: the planner keeps it free before every deadline, cutting batches
        short for it, so the work ahead runs in smaller batches than
        predicted. Both stand for the same time outside the engine, so the
        larger one counts, not their sum. A request with nothing queued ahead
        of it runs in the next batch once its slack is short, so only the
        margin pads it (docs/experiments/admission-padding.md). ``light``:
        the offered load is far below the margin's ramp, where admitting work
        that may be late costs nobody else engine time and a refusal is a
        certain miss: nothing pads (docs/experiments/admission-starvation.md)."""
        if light:
            return now + predicted
        pad = (margin or self.margin).seconds(predicted)
        if queued_behind:
            pad = max(pad, self.planner.reserve)
        return now + predicted + pad

    def finish_without(self, now: float) -> float:
        """When the queued requests are predicted to finish, padded as
        admission pads: the queued batch's end without a newcomer.

        Balanced admission refuses a newcomer for the batch it would join only
        when joining is what makes that batch late: when the batch is
        predicted late already, refusing saves none of its requests. Strict
        admission keeps the whole rule: it would rather refuse than answer
        late (docs/experiments/admission-batch-rule.md)."""
        return self.padded_finish(now, self.backlog_seconds(now, 0))

    def fits_next_batch(
        self, now: float, rows: int, deadline: float, margin: Margin, light: bool = False
    ) -> bool:
        """Whether a newcomer of ``rows`` rows would still finish in time in a
        batch of its own after the queued ones: then the planner cuts the
        batch it would join short rather than make that batch late
        (``AdaptivePlanner.cut``), and refusing it saves nobody. Under mixed
        deadlines a loose newcomer was refused for tight requests it would
        never have delayed (docs/experiments/mixed-deadlines.md). A newcomer
        due about when that batch's head is (``AdaptivePlanner.deferrable``)
        keeps the batch whole and may make its head late instead; refusing
        it then lost more than it saved (docs/experiments/cut-spread.md)."""
        alone = self.backlog_seconds(now, 0) + self.latency.mean(rows) / self.slots.total
        return self.padded_finish(now, alone, margin=margin, light=light) <= deadline

    def makes_queued_late(
        self, now: float, priority: int, deadline: float, rows: int, ahead: int
    ) -> bool:
        """Whether a newcomer of ``rows`` rows (``ahead``: the queued rows
        dispatched before it), going ahead of the queued requests due after
        ``deadline``, would push one of them, predicted on time, past its
        deadline (typical engine times, unpadded).

        Earliest deadline first lets a tight request overtake looser ones,
        which is free while they have slack to give; where they do not, it
        trades one on-time answer for another and wastes the batch slots the
        tight request takes. Under mixed deadlines at bursty load the loose
        requests lost this way outnumbered the tight ones saved
        (docs/experiments/tight-deadlines.md)."""
        for due, queued_rows in self.queue.behind(priority, deadline):
            without = now + self.backlog_seconds(now, queued_rows, ahead)
            if without <= due < now + self.backlog_seconds(now, queued_rows, ahead + rows):
                return True
            ahead += queued_rows
        return False

    def refuse_late(self, predicted: float, why: str, reason: str = "deadline") -> NoReturn:
        self.counters.refused[reason] += 1
        self.observer.on_refused(reason)
        raise DeadlineExceeded(f"{ADMISSION_REFUSAL}: predicted {predicted * 1e3:.1f} ms, {why}")

    def batch_deadline(self, rows: int) -> float:
        """Earliest deadline among the queued requests whose batch a new
        request of ``rows`` rows would join (inf when it would start one).

        Joining makes that batch bigger and slower, so it must still finish
        before the deadlines of the requests in it, which were admitted on
        the promise of a smaller batch (docs/experiments/admission-batch-rule.md).
        Queued batches are cut every ``largest`` rows in queue order, and
        under one latency budget queue order is admission order, so the batch
        being filled holds the last ``queued rows % largest`` rows admitted
        (an approximation when deadlines, priorities or shapes differ: it then
        protects requests that may not share the batch, which only refuses
        more)."""
        largest = self.options.largest
        partial = self.queue.rows % largest
        if partial == 0 or partial + rows > largest:
            return math.inf
        earliest, seen = math.inf, 0
        for entry in reversed(self._admitted):
            if entry.done:
                continue
            earliest = min(earliest, entry.deadline)
            seen += entry.rows
            if seen >= partial:
                break
        return earliest

    def offered_load(self, now: float, seconds_left: float = math.inf) -> float:
        """Rows offered per second, on the slow average, as a fraction of the
        most the engine can serve within the time a request due
        ``seconds_left`` from now has (the model's latency budget at most; 0
        while unmeasured).

        Sustained load, not the fast one the planner sizes batches for: a
        burst the queue absorbs is no overload, and margins sized for
        overload refused a tenth of the requests of a 0.2x bursty load that
        static batching answered in time. Within the request's own time: a
        request due sooner than two full batches is served only while the
        engine runs short ones, so the same rows are a heavier load for it
        than for a patient one (docs/experiments/tight-deadlines.md)."""
        if now - self._capacity_at > CAPACITY_REFRESH_S:
            self._capacity_at = now
            self._capacity.clear()
            self._capacity_ahead.clear()
            self._starving = self.starving(now)
        budget = self.options.budget_s
        if budget is not None:
            seconds_left = min(seconds_left, budget - self.options.reply_allowance_s)
        if self.fits_two_full_batches(seconds_left):
            key = -1  # the engine's whole capacity
        else:  # in steps of CAPACITY_STEP_S, rounded down
            key = max(0, int(seconds_left / CAPACITY_STEP_S))
        capacity = self._capacity.get(key)
        if capacity is None:
            within = None if key < 0 else key * CAPACITY_STEP_S + self.options.reply_allowance_s
            capacity = self._capacity[key] = self.capacity_within(within)
        if capacity <= 0:
            return 0.0
        return self.offered.slow.rate(now) / capacity

    def fits_two_full_batches(self, seconds_left: float) -> bool:
        """Whether a request due ``seconds_left`` from now can wait out a full
        batch and run in the next: its load is then the budget's."""
        reserve = self.planner.reserve
        return seconds_left >= 2 * self.latency.mean(self.options.largest) + reserve

    def is_light(self, load: float) -> bool:
        """Whether ``load`` (``offered_load``) is far enough below the
        margin's ramp that a refusal would save nobody else engine time."""
        return load < LIGHT_SHARE * self.options.mode.ramp[0]

    def tight_at_light_load(self, now: float) -> Tightest:
        """The tightest deadline class (``tight.Tightest``) while the load is
        light for batches short enough for it; ``NONE`` otherwise.

        The load is the sustained one (``SUSTAINED_TAU_S``) over what the
        engine serves in batches after which such a request, landing as one
        leaves, still finishes in the next (``capacity_ahead_of``): what the
        tight cap leaves the engine. Measured within the request's deadline
        (batches of which two fit in it) and on the 0.25 s average, the load
        read heavy in every burst at a tenth of capacity, and full batches
        ran ahead of the tight requests that came with it."""
        tight = self.tight.tightest(now)
        if not tight.counts:
            return NONE
        capacity = self.capacity_ahead_of(tight)
        if capacity > 0 and self.is_light(self.sustained.rate(now) / capacity):
            return tight
        return NONE

    def capacity_ahead_of(self, tight: Tightest) -> float:
        """Rows/s of the engine, on every slot, in the batches short enough
        that a ``tight`` request landing as one leaves still finishes in the
        next (``AdaptivePlanner.tight_cap``'s sizes); 0 if none is."""
        key = (int(tight.seconds / CAPACITY_STEP_S), tight.rows)
        capacity = self._capacity_ahead.get(key)
        if capacity is not None:
            return capacity
        planner = self.planner
        tight_batch = self.latency.mean(planner.cover(max(1, tight.rows)))
        budget = key[0] * CAPACITY_STEP_S - planner.reserve - tight_batch
        capacity = self._capacity_ahead[key] = self.rows_per_s(budget, smallest=False)
        return capacity

    def starving(self, now: float) -> bool:
        """Whether refusals leave the engine less than ``STARVED`` of the
        offered rows it could serve at its best batch size.

        On a host whose engine times swing by multiples between calls (a CPU
        shared with other work) the error tail the overload margin covers is
        as long as the budget: admission then refuses all but the requests
        that find the engine idle, those run in batches of one, the engine
        serves a fraction of its capacity, and its times stay long. Static
        batching answered half of such a load on time where this answered a
        tenth. While starving, the margin covers only the error's bias, so the
        queue fills the engine's batches again
        (docs/experiments/admission-starvation.md)."""
        lat = self.latency
        best = max((size / lat.mean(size) for size in lat.sizes if lat.mean(size) > 0), default=0.0)
        servable = min(self.offered.rate(now), best * self.slots.total)
        return servable > 0 and self.admitted_rows.rate(now) < STARVED * servable

    def budget_capacity(self) -> float:
        """Rows/s of the engine within the model's latency budget
        (``capacity_within``)."""
        return self.capacity_within(self.options.budget_s)

    def capacity_within(self, budget: float | None) -> float:
        """Rows/s of the engine, on every slot, at the batch size with the most
        rows/s among those whose mean time fits in half of ``budget`` (less
        the planner's reserve); the largest size without a budget.

        Under load a request waits for the batch running when it arrives and
        then runs in the next, so two batch times must fit in its budget: a
        fixed-cost model cannot use its largest batches there, and measured
        against the largest batch the load signal stayed low near capacity
        (docs/experiments/admission-ramp.md)."""
        limit = math.inf if budget is None else (budget - self.planner.reserve) / 2
        return self.rows_per_s(limit, smallest=True)

    def rows_per_s(self, limit: float, *, smallest: bool) -> float:
        """Rows/s of the engine, on every slot, at the batch size with the
        most rows/s among those whose mean time is within ``limit`` seconds
        (``smallest``: the smallest size counts even past it); 0 while a size
        is unmeasured."""
        lat = self.latency
        best = 0.0
        for size in lat.sizes:
            seconds = lat.mean(size)
            if seconds <= 0:
                return 0.0
            if seconds > limit and (best > 0 or not smallest):
                break  # engine time grows with the batch size
            best = max(best, size / seconds)
        return best * self.slots.total

    def backlog_seconds(self, now: float, rows: int, ahead: int | None = None) -> float:
        """Predicted time until a request of ``rows`` rows would finish,
        queued behind ``ahead`` rows (default: everything queued now)."""
        lat = self.latency
        largest = self.options.largest
        total = (self.queue.rows if ahead is None else ahead) + rows
        if total <= 0:
            return 0.0
        full, rest = divmod(total, largest)
        # Until a slot frees for the queue: after the running batches and
        # those handed ahead of it.
        slots = self.slots
        wait = slots.next_free_at(now) - now
        full_s = full * lat.mean(largest) / slots.total
        if rest and (wait > 0 or full) and rows and total - rows >= self.queue.rows:
            # The last batch starts later and takes in what arrives meanwhile
            # (only when it is last in line: a request that goes ahead of
            # queued ones has its batch cut short for it, AdaptivePlanner.cut).
            rest = min(largest, rest + int(self.offered.rate(now) * (wait + full_s)))
        # Typical times, which the learnt margin corrects: a sum of pessimistic
        # ones lies far past the pessimistic sum and refused at light load.
        return wait + full_s + (lat.mean(rest) / slots.total if rest else 0.0)
