"""Serve two or more revisions of inferd side by side and let them take turns.

    python -m benchmarks.revisions --rev before=HEAD~1 --rev after=. \\
        [--scenario batcher-poisson] [--fractions 0.5 0.9] [--seconds 10] \\
        [--rounds 3] [--static 16/2000] [--policy adaptive-strict] [--json FILE]

``--rev NAME=REV`` serves the scenario's first policy (for the batcher
scenarios: adaptive with the 25 ms budget; ``--policy`` names another of the
scenario's, e.g. ``adaptive-strict``) from git revision REV, checked out
with ``git worktree`` into a temporary folder that is removed afterwards;
``.`` is the working tree as it is, uncommitted edits included. ``--static
PREFERRED/DELAY_US`` adds a Triton-style static server from the working tree
(``0/0``: Triton's default, no preferred size and no queue delay).

Why: this host's speed drifts by tens of percent within minutes, so a change
measured in one run and its baseline in another compares hosts, not code.
Here every server is up at once (an idle one costs no CPU) and at each load
point the variants take turns, round after round, so that each sees the same
drift. Capacity is measured first, the scenario's way, on the working tree.

Prints one line per run, then per point and variant the pooled figures: SLO
attainment (on time / sent; with mixed deadlines also per deadline), refused
at arrival, admitted on time (on time / not refused), goodput (requests/s on
time). Open-loop scenarios only.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from benchmarks.loadgen import LoadResult, Summary, deadline_key
from benchmarks.report import plain
from benchmarks.runner import (
    ROOT,
    RunError,
    Runner,
    measure_capacity,
    model_source,
    serve,
)
from benchmarks.scenarios import SCENARIOS, Policy, Scenario, scaled


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    #: Code root the server runs from; the policy it serves the model with.
    root: Path
    policy: Policy


@dataclasses.dataclass
class Total:
    """One variant at one point, pooled over its rounds."""

    variant: str
    point: float
    sent: int = 0
    on_time: int = 0
    refused: int = 0
    seconds: float = 0.0
    invalid_rounds: int = 0
    #: Mixed deadlines: [on time, sent] of the requests due in each (key: ms).
    by_deadline: dict[str, list[int]] = dataclasses.field(default_factory=dict)

    def add(self, result: LoadResult, summary: Summary) -> None:
        samples = result.samples
        self.sent += len(samples)
        self.on_time += round(summary.slo_attainment * len(samples))
        for due in np.unique(samples.deadline) if summary.slo_by_deadline_ms else ():
            key = deadline_key(due)
            sent = int(np.count_nonzero(samples.deadline == due))
            counts = self.by_deadline.setdefault(key, [0, 0])
            counts[0] += round(summary.slo_by_deadline_ms.get(key, 0.0) * sent)
            counts[1] += sent
        self.refused += int(samples.refused.sum())
        self.seconds += result.duration_s
        self.invalid_rounds += 0 if summary.valid else 1

    @property
    def figures(self) -> dict[str, float]:
        admitted = self.sent - self.refused
        return {
            "slo_attainment": self.on_time / self.sent if self.sent else math.nan,
            "refused": self.refused / self.sent if self.sent else math.nan,
            "admitted_on_time": self.on_time / admitted if admitted else math.nan,
            "goodput_rps": self.on_time / self.seconds if self.seconds else math.nan,
        }

    @property
    def slo_by_deadline_ms(self) -> dict[str, float]:
        return {k: on / sent if sent else math.nan for k, (on, sent) in self.by_deadline.items()}

    def line(self) -> str:
        f = self.figures
        invalid = f" ({self.invalid_rounds} invalid rounds)" if self.invalid_rounds else ""
        return (
            f"{self.variant:>12} {self.point:5.2f}x  SLO {f['slo_attainment']:.3f}"
            f"{per_deadline(self.slo_by_deadline_ms)}  "
            f"refused {f['refused']:.3f}  adm.ok {f['admitted_on_time']:.4f}  "
            f"goodput {f['goodput_rps']:7.1f}/s{invalid}"
        )


def per_deadline(attainment: dict[str, float]) -> str:
    """`` (15 ms 0.912, 50 ms 0.998)`` for mixed deadlines, else nothing."""
    if not attainment:
        return ""
    return " (" + ", ".join(f"{k} ms {v:.3f}" for k, v in attainment.items()) + ")"


def parse_rev(text: str) -> tuple[str, str]:
    name, sep, rev = text.partition("=")
    if not sep or not name or not rev:
        raise argparse.ArgumentTypeError(f"expected NAME=REV, got {text!r}")
    return name, rev


def parse_static(text: str) -> Policy:
    preferred, sep, delay = text.partition("/")
    try:
        size, delay_us = int(preferred), int(delay)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected PREFERRED/DELAY_US, got {text!r}") from None
    if not sep or size < 0 or delay_us < 0:
        raise argparse.ArgumentTypeError(f"expected PREFERRED/DELAY_US, got {text!r}")
    return Policy(
        f"static p{size}/{delay_us}us" if size else f"static {delay_us}us",
        params=(("batching_policy", "static"),),
        preferred_batch_size=(size,) if size else (),  # 0: none, as Triton's default
        max_queue_delay_us=delay_us,
    )


@contextlib.contextmanager
def checkout(rev: str, parent: Path) -> Iterator[Path]:
    """The code of ``rev`` in a temporary worktree (``.``: the working tree)."""
    if rev == ".":
        yield ROOT
        return
    dest = Path(tempfile.mkdtemp(prefix="rev-", dir=parent))
    try:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", "--force", str(dest), rev],
            check=True,
            capture_output=True,
            text=True,
        )
    except subprocess.CalledProcessError as exc:
        raise RunError(f"cannot check out {rev!r}: {exc.stderr.strip()}") from None
    try:
        yield dest
    finally:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(dest)],
            capture_output=True,
        )


def run(
    scenario: Scenario,
    revs: Sequence[tuple[str, str]],
    *,
    fractions: Sequence[float],
    seconds: float,
    rounds: int,
    statics: Sequence[Policy] = (),
    policy: Policy | None = None,
    warmup_s: float = 1.0,
    capacity_s: float = 5.0,
    out: Callable[[str], None] = print,
) -> dict[str, object]:
    """Measure capacity, then every variant at every fraction, taking turns."""
    if scenario.mode != "open":
        raise RunError(f"scenario {scenario.name} is closed-loop; revisions needs open loop")
    times = dataclasses.replace(
        scaled(scenario, 1.0), duration_s=seconds, warmup_s=warmup_s, capacity_s=capacity_s
    )
    runner = Runner(scenario, times)
    source = model_source(scenario)
    totals: dict[tuple[str, float], Total] = {}
    runs: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="inferd-revisions-") as tmp_name:
        tmp = Path(tmp_name)

        with contextlib.ExitStack() as stack:
            served = policy or scenario.policies[0]
            variants = [
                Variant(name, stack.enter_context(checkout(rev, tmp)), served) for name, rev in revs
            ]
            variants += [Variant(p.name.replace("static ", "static-"), ROOT, p) for p in statics]
            addresses = [
                stack.enter_context(
                    serve(source, tmp, scenario, v.policy, tmp, cwd=v.root, label=v.name)
                )
                for v in variants
            ]
            capacity = measure_capacity(runner, source, tmp, tmp).throughput_rps
            out(f"capacity: {capacity:.0f} requests/s")
            for point in fractions:
                for r in range(rounds):
                    for variant, address in zip(variants, addresses, strict=True):
                        res, batch = runner.load(address, point, capacity_rps=capacity)
                        summary = res.summary(runner.lag_limit_ms)
                        total = totals.setdefault((variant.name, point), Total(variant.name, point))
                        total.add(res, summary)
                        lag = summary.lag_ms.get("p99", math.nan)
                        out(
                            f"{variant.name:>12} {point:5.2f}x round {r}  "
                            f"SLO {summary.slo_attainment:.3f}"
                            f"{per_deadline(summary.slo_by_deadline_ms)}  "
                            f"refused {summary.refusal_rate:.3f}  "
                            f"adm.ok {summary.admitted_on_time:.4f}  "
                            f"goodput {summary.goodput_rps:7.1f}/s  "
                            f"p99 {summary.latency_ms.get('p99', math.nan):5.1f} ms  "
                            f"batch {batch or math.nan:4.1f}  lag p99 {lag:.2f} ms"
                            + ("" if summary.valid else f"  INVALID ({summary.invalid_reason})")
                        )
                        runs.append(
                            {"variant": variant.name, "point": point, "round": r,
                             "summary": dataclasses.asdict(summary), "mean_batch": batch}
                        )  # fmt: skip
    out("totals (pooled over rounds):")
    for total in totals.values():
        out(total.line())
    return {
        "scenario": scenario.name,
        "revisions": dict(revs),
        "static": [p.name for p in statics],
        "policy": served.name,
        "capacity_rps": capacity,
        "seconds": seconds,
        "rounds": rounds,
        "runs": runs,
        "totals": [
            {
                "variant": t.variant,
                "point": t.point,
                **t.figures,
                "sent": t.sent,
                "slo_by_deadline_ms": t.slo_by_deadline_ms,
            }
            for t in totals.values()
        ],
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.revisions", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--rev", type=parse_rev, action="append", required=True, metavar="NAME=REV",
        help="a git revision to serve (repeat; '.' is the working tree)",
    )  # fmt: skip
    parser.add_argument("--scenario", default="batcher-poisson", choices=sorted(SCENARIOS))
    parser.add_argument("--fractions", type=float, nargs="+", help="default: the scenario's")
    parser.add_argument("--seconds", type=float, default=10.0, help="per run (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="turns per point (default 3)")
    parser.add_argument(
        "--static", type=parse_static, action="append", default=[], metavar="P/DELAY_US",
        help="also a Triton-style static server from the working tree (repeat)",
    )  # fmt: skip
    parser.add_argument(
        "--policy", help="which of the scenario's policies the revisions serve (default: its first)"
    )
    parser.add_argument("--json", type=Path, help="also write every run and the totals here")
    opts = parser.parse_args(argv)
    names = [name for name, _ in opts.rev]
    if len(set(names)) != len(names):
        parser.error("--rev names must differ")
    if opts.seconds <= 0 or opts.rounds < 1:
        parser.error("--seconds must be > 0 and --rounds >= 1")
    scenario = SCENARIOS[opts.scenario]
    # Static's candidates are tuned per run, which side-by-side turns do not do.
    servable = {p.name: p for p in scenario.policies if not p.candidates}
    if opts.policy is not None and opts.policy not in servable:
        parser.error(f"--policy must be one of {', '.join(sorted(servable))} for {scenario.name}")
    try:
        report = run(
            scenario, opts.rev, fractions=opts.fractions or scenario.load_fractions,
            seconds=opts.seconds, rounds=opts.rounds, statics=opts.static,
            policy=servable[opts.policy] if opts.policy else None,
        )  # fmt: skip
    except RunError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if opts.json:
        opts.json.write_text(json.dumps(plain(report), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
