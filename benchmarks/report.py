"""A scenario run's results: target checks, summary.json, points.csv, PNG
plots and the console table."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.loadgen import Summary
from benchmarks.raw_engine import RawPoint
from benchmarks.scenarios import GoodputGoal, Scenario, Targets


@dataclass
class PointResult:
    policy: str
    index: int
    point: float  # concurrency (closed loop) or fraction of capacity (open loop)
    label: str
    summary: Summary
    targets: Targets = field(default_factory=Targets)
    misses: list[str] = field(default_factory=list)
    #: Rows per engine execution over the point (ModelStatistics deltas).
    mean_batch: float | None = None
    #: Raw engine rows/s at the batch size nearest ``mean_batch``, and served/raw.
    raw_rows_per_s: float | None = None
    efficiency: float | None = None
    #: Served rows/s over the bare grpc.aio reference's at the same point.
    vs_reference: float | None = None


@dataclass
class GoalResult:
    """A ``GoodputGoal`` judged on a run: per policy, the point it was taken
    at (None: no valid point kept the attainment) and its goodput."""

    attainment: float
    ratio_goal: float
    best: dict[str, tuple[str, float] | None]
    #: First policy's goodput over the best other's; when no other policy
    #: kept the attainment anywhere, a lower bound (see ``judge_goodput_goal``).
    ratio: float
    met: bool
    #: True when ``ratio`` is that lower bound.
    bound: bool = False

    @property
    def line(self) -> str:
        parts = [
            f"{name} {'none' if at is None else f'{at[1]:.1f} req/s at {at[0]}'}"
            for name, at in self.best.items()
        ]
        verdict = "met" if self.met else "NOT met"
        ratio = f"ratio {self.ratio:.2f}"
        if self.bound:
            ratio = (
                f"ratio at least {self.ratio:.2f} (the others kept it at no load tried: "
                "bounded by the lowest load offered)"
            )
        return (
            f"goodput at >= {self.attainment:g} SLO attainment: {', '.join(parts)}; "
            f"{ratio} (goal {self.ratio_goal:g}x: {verdict})"
        )


@dataclass(frozen=True)
class GoalSample:
    """One point as the goodput goal sees it."""

    policy: str
    label: str
    valid: bool
    attainment: float
    goodput_rps: float
    offered_rps: float


def judge_goodput_goal(
    points: list[PointResult], policies: list[str], goal: GoodputGoal
) -> GoalResult:
    """The goal judged on a scenario run's points (``judge_samples``)."""
    samples = [
        GoalSample(
            p.policy,
            p.label,
            p.summary.valid,
            p.summary.slo_attainment,
            p.summary.goodput_rps,
            p.summary.offered_rps or p.summary.sent_rps,
        )
        for p in points
    ]
    return judge_samples(samples, policies, goal)


def judge_samples(samples: list[GoalSample], policies: list[str], goal: GoodputGoal) -> GoalResult:
    """Each policy's highest goodput over its valid points that kept the
    goal's SLO attainment; the goal compares the first policy with the best
    of the others. Invalid points (client lagged) never count.

    When no other policy kept the attainment at any load tried, their
    goodput at it is not measured, only bounded: below the lowest load
    offered to them (where they already missed). The ratio is then the
    first policy's goodput over that load's offered rate, a lower bound, so
    that a first policy that kept it only at that same lowest load is not
    called 1.3x (or infinitely) better."""
    best: dict[str, tuple[str, float] | None] = dict.fromkeys(policies)
    for s in samples:
        if s.policy not in best or not s.valid or not s.attainment >= goal.attainment:
            continue
        current = best[s.policy]
        if current is None or s.goodput_rps > current[1]:
            best[s.policy] = (s.label, s.goodput_rps)
    first, *others = policies
    mine = best[first][1] if best[first] is not None else 0.0
    theirs = max((b[1] for o in others if (b := best[o]) is not None), default=0.0)
    if theirs > 0 or mine == 0:
        ratio = mine / theirs if theirs > 0 else 0.0
        return GoalResult(goal.attainment, goal.ratio, best, ratio, ratio >= goal.ratio)
    offered = [s.offered_rps for s in samples if s.policy in others and s.valid]
    lowest = min(offered, default=0.0)
    ratio = mine / lowest if lowest > 0 else math.inf
    return GoalResult(goal.attainment, goal.ratio, best, ratio, ratio >= goal.ratio, bound=True)


@dataclass
class RunReport:
    scenario: Scenario
    started: str
    duration_scale: float
    workers: int
    machine: dict[str, Any]
    capacity_rows_per_s: float | None = None
    raw_engine: list[RawPoint] = field(default_factory=list)
    #: Static candidates probed before the static points; the best is named in ``chosen``.
    tuning: list[PointResult] = field(default_factory=list)
    chosen: dict[str, str] = field(default_factory=dict)
    points: list[PointResult] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: The scenario's goodput goal, judged (see ``judge_goodput_goal``).
    goodput_goal: GoalResult | None = None

    @property
    def misses(self) -> list[str]:
        misses = [f"{p.policy} {p.label}: {m}" for p in self.points for m in p.misses]
        if self.goodput_goal is not None and not self.goodput_goal.met:
            misses.append(self.goodput_goal.line)
        return misses

    @property
    def invalid(self) -> list[str]:
        return [
            f"{p.policy} {p.label}: {p.summary.invalid_reason}"
            for p in self.points
            if not p.summary.valid
        ]


def check_targets(summary: Summary, targets: Targets) -> list[str]:
    """One line per target the point missed (a point without OK answers
    misses every latency target)."""
    misses = []
    for name, limit in (("p95", targets.p95_ms), ("p99", targets.p99_ms)):
        if limit is None:
            continue
        value = summary.latency_ms.get(name, math.nan)
        if math.isnan(value) or value > limit:
            misses.append(f"{name} {value:.2f} ms > target {limit:g} ms")
    if targets.min_slo is not None and summary.slo_attainment < targets.min_slo:
        misses.append(f"SLO attainment {summary.slo_attainment:.3f} < target {targets.min_slo:g}")
    least = targets.min_admitted_on_time
    if least is not None and not summary.admitted_on_time >= least:  # NaN misses too
        misses.append(f"admitted on time {summary.admitted_on_time:.4f} < target {least:g}")
    return misses


# --------------------------------------------------------------------------- files


def plain(value: Any) -> Any:
    """JSON-safe: NaN/inf become null (json.dumps would write bare NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def report_dict(report: RunReport) -> dict[str, Any]:
    data = dataclasses.asdict(report)
    data["passed"] = not report.misses and not report.errors
    data["misses"] = report.misses
    data["invalid_points"] = report.invalid
    return {k: plain(v) for k, v in data.items()}


CSV_FIELDS = [
    "policy", "point", "label", "offered_rps", "sent_rps", "sent", "ok", "throughput_rps",
    "rows_per_s", "goodput_rps", "slo_attainment", "refusal_rate", "admitted_on_time", "error_rate",
    "p50_ms", "p90_ms", "p95_ms", "p99_ms", "p99.9_ms", "mean_ms", "max_ms",
    "lag_p50_ms", "lag_p99_ms", "lag_max_ms", "mean_batch", "raw_rows_per_s", "efficiency",
    "vs_reference",
    "client_cpu", "client_priority", "valid", "invalid_reason", "target_p95_ms", "target_p99_ms",
    "target_min_slo", "target_min_admitted_on_time", "passed", "misses", "errors",
]  # fmt: skip


def csv_row(p: PointResult) -> dict[str, Any]:
    s = p.summary
    row: dict[str, Any] = {
        "policy": p.policy, "point": p.point, "label": p.label,
        "offered_rps": s.offered_rps, "sent_rps": s.sent_rps, "sent": s.sent, "ok": s.ok,
        "throughput_rps": s.throughput_rps, "rows_per_s": s.rows_per_s,
        "goodput_rps": s.goodput_rps, "slo_attainment": s.slo_attainment,
        "refusal_rate": s.refusal_rate, "admitted_on_time": s.admitted_on_time,
        "error_rate": s.error_rate,
        "mean_batch": p.mean_batch, "raw_rows_per_s": p.raw_rows_per_s,
        "efficiency": p.efficiency, "vs_reference": p.vs_reference,
        "client_cpu": s.client_cpu, "client_priority": s.client_priority, "valid": s.valid,
        "invalid_reason": s.invalid_reason, "target_p95_ms": p.targets.p95_ms,
        "target_p99_ms": p.targets.p99_ms, "target_min_slo": p.targets.min_slo,
        "target_min_admitted_on_time": p.targets.min_admitted_on_time,
        "passed": not p.misses, "misses": "; ".join(p.misses),
        "errors": ";".join(f"{k}:{v}" for k, v in sorted(s.errors.items())),
    }  # fmt: skip
    for key, value in s.latency_ms.items():
        row[f"{key}_ms"] = value
    for key, value in s.lag_ms.items():
        row[f"lag_{key}_ms"] = value
    return {k: ("" if v is None else v) for k, v in row.items()}


def write_report(report: RunReport, directory: Path) -> list[Path]:
    """summary.json, points.csv and the plots (when matplotlib is installed)."""
    directory.mkdir(parents=True, exist_ok=True)
    summary = directory / "summary.json"
    summary.write_text(json.dumps(report_dict(report), indent=2, allow_nan=False) + "\n")
    points = directory / "points.csv"
    with points.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for p in [*report.tuning, *report.points]:
            writer.writerow(csv_row(p))
    return [summary, points, *write_plots(report, directory)]


# --------------------------------------------------------------------------- plots


def write_plots(report: RunReport, directory: Path) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only; never a display
        import matplotlib.pyplot as plt
    except ImportError:
        return []  # the bench extra is not installed: JSON and CSV still written
    scenario = report.scenario
    closed = scenario.mode == "closed"
    xlabel = "concurrency (requests in flight)" if closed else "offered load (x capacity)"
    policies = list(dict.fromkeys(p.policy for p in report.points))
    written = []

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, policy in enumerate(policies):
        pts = [p for p in report.points if p.policy == policy]
        x = [p.point for p in pts]
        for key, style in (("p50", ":"), ("p95", "--"), ("p99", "-")):
            y = [p.summary.latency_ms.get(key, math.nan) for p in pts]
            ax.plot(x, y, style, marker="o", color=f"C{i}", label=f"{policy} {key}")
        _mark_invalid(ax, pts, [p.summary.latency_ms.get("p99", math.nan) for p in pts])
    lines = sorted({ms for _, ms in scenario.deadline_mix} or {scenario.deadline_ms or 0})
    for ms in filter(None, lines):
        ax.axhline(ms, color="grey", lw=0.8, label=f"deadline {ms:g} ms")
    ax.set(xlabel=xlabel, ylabel="latency (ms)", title=f"{scenario.name}: latency vs load")
    if closed:
        _concurrency_axis(ax, scenario.points)
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    written.append(_save(fig, directory / "latency.png"))

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, policy in enumerate(policies):
        pts = [p for p in report.points if p.policy == policy]
        y = [p.summary.rows_per_s for p in pts]
        ax.plot([p.point for p in pts], y, marker="o", color=f"C{i}", label=policy)
        _mark_invalid(ax, pts, y)
    if report.raw_engine:
        best = max(report.raw_engine, key=lambda r: r.rows_per_s)
        ax.axhline(best.rows_per_s, color="grey", ls="--", lw=0.8,
                   label=f"raw engine, batch {best.batch}")  # fmt: skip
    if report.capacity_rows_per_s:
        ax.axhline(report.capacity_rows_per_s, color="black", ls=":", lw=0.8, label="capacity")
    ax.set(xlabel=xlabel, ylabel="OK rows/s", title=f"{scenario.name}: throughput")
    if closed:
        _concurrency_axis(ax, scenario.points)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    written.append(_save(fig, directory / "throughput.png"))

    if not closed:
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 7), sharex=True)
        for i, policy in enumerate(policies):
            pts = [p for p in report.points if p.policy == policy]
            x = [p.summary.offered_rps or math.nan for p in pts]
            y = [p.summary.goodput_rps for p in pts]
            top.plot(x, y, marker="o", color=f"C{i}", label=policy)
            _mark_invalid(top, pts, y, x)
            slo = [p.summary.slo_attainment for p in pts]
            bottom.plot(x, slo, marker="o", color=f"C{i}", label=policy)
            _mark_invalid(bottom, pts, slo, x)
            admitted = [p.summary.admitted_on_time for p in pts]
            bottom.plot(x, admitted, marker="x", ls="--", color=f"C{i}",
                        label=f"{policy}: admitted on time")  # fmt: skip
        lim = max((p.summary.offered_rps or 0 for p in report.points), default=0)
        top.plot([0, lim], [0, lim], color="grey", lw=0.8, ls=":", label="goodput = offered")
        top.set(ylabel="goodput (req/s within deadline)",
                title=f"{scenario.name}: goodput vs offered load")  # fmt: skip
        bottom.set(xlabel="offered load (req/s)", ylabel="on time / sent (or / admitted)",
                   ylim=(0, 1.02))  # fmt: skip
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        written.append(_save(fig, directory / "goodput.png"))
    return written


def _concurrency_axis(ax: Any, points: tuple[float, ...]) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(points), [f"{p:g}" for p in points])
    ax.minorticks_off()


def _mark_invalid(
    ax: Any, pts: list[PointResult], y: list[float], x: list[float] | None = None
) -> None:
    xs = x if x is not None else [p.point for p in pts]
    bad = [(xi, yi) for xi, yi, p in zip(xs, y, pts, strict=True) if not p.summary.valid]
    if bad:
        labelled = any(c.get_label() == "invalid point" for c in ax.collections)
        ax.scatter(*zip(*bad, strict=True), marker="x", s=80, color="red", zorder=5,
                   label="_nolegend_" if labelled else "invalid point")  # fmt: skip


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


# --------------------------------------------------------------------------- console


def _ms(v: float | None, digits: int = 2) -> str:
    return "-" if v is None or math.isnan(v) else f"{v:.{digits}f}"


def _ratio(p: PointResult) -> str:
    """served/raw engine, or (marked r) served/bare grpc.aio reference."""
    if p.efficiency is not None:
        return f"{p.efficiency:.2f}"
    return "-" if p.vs_reference is None else f"{p.vs_reference:.2f}r"


def format_table(report: RunReport) -> str:
    closed = report.scenario.mode == "closed"
    head = (
        f"{'policy':<22} {'point':>7} {'offered':>8} {'rows/s':>9} {'goodput':>8} "
        f"{'SLO':>6} {'refuse':>6} {'adm.ok':>6} {'p50':>7} {'p95':>7} {'p99':>7} {'p99.9':>7} "
        f"{'batch':>5} {'eff':>5} {'lag99':>6}  result"
    )
    lines = [head, "-" * len(head)]
    for p in [*report.tuning, *report.points]:
        s, lat = p.summary, p.summary.latency_ms
        status = "ok" if not p.misses else "MISS " + "; ".join(p.misses)
        if not s.valid:
            status = f"INVALID ({s.invalid_reason}) " + ("" if not p.misses else status)
        if p in report.tuning:
            status = "tuning probe"
        lines.append(
            f"{p.policy[:22]:<22} {p.label:>7} "
            f"{'-' if closed or s.offered_rps is None else f'{s.offered_rps:.0f}':>8} "
            f"{s.rows_per_s:9.0f} {s.goodput_rps:8.0f} {s.slo_attainment:6.3f} "
            f"{s.refusal_rate:6.3f} {_ms(s.admitted_on_time, 4):>6} "
            f"{_ms(lat.get('p50')):>7} {_ms(lat.get('p95')):>7} {_ms(lat.get('p99')):>7} "
            f"{_ms(lat.get('p99.9')):>7} "
            f"{'-' if p.mean_batch is None else f'{p.mean_batch:.1f}':>5} "
            f"{_ratio(p):>5} "
            f"{_ms(s.lag_ms.get('p99')):>6}  {status}"
        )
    if report.capacity_rows_per_s:
        lines.append(f"capacity (closed-loop saturation): {report.capacity_rows_per_s:.0f} rows/s")
    if report.goodput_goal is not None:
        lines.append(report.goodput_goal.line)
    for policy, chosen in report.chosen.items():
        lines.append(f"{policy}: best-tuned candidate {chosen}")
    for raw in report.raw_engine:
        spread = raw.call_p99_ms / raw.call_p50_ms if raw.call_p50_ms > 0 else math.nan
        lines.append(
            f"raw engine batch {raw.batch:>3}: {raw.rows_per_s:9.0f} rows/s "
            f"{raw.calls_per_s:8.0f} calls/s; one call p50 {raw.call_p50_ms:.2f} ms, "
            f"p99 {raw.call_p99_ms:.2f} ms ({spread:.2f}x)"
        )
    for note in report.notes:
        lines.append(f"note: {note}")
    for e in report.errors:
        lines.append(f"error: {e}")
    return "\n".join(lines)
