"""The revision A/B runner: servers from git revisions taking turns."""

from __future__ import annotations

import argparse
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from benchmarks import revisions
from benchmarks.loadgen import LoadResult, Samples
from benchmarks.runner import ROOT, RunError
from benchmarks.scenarios import SCENARIOS


def _git_checkout() -> bool:
    if shutil.which("git") is None:
        return False
    probe = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--verify", "HEAD"], capture_output=True
    )
    return probe.returncode == 0


needs_git = pytest.mark.skipif(not _git_checkout(), reason="not a git checkout with a HEAD")


def _worktrees() -> str:
    return subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "list"], capture_output=True, text=True, check=True
    ).stdout


def test_arguments_name_a_revision_and_a_static_setting() -> None:
    assert revisions.parse_rev("before=HEAD~1") == ("before", "HEAD~1")
    assert revisions.parse_rev("work=.") == ("work", ".")
    for bad in ("HEAD", "=HEAD", "name="):
        with pytest.raises(argparse.ArgumentTypeError):
            revisions.parse_rev(bad)
    policy = revisions.parse_static("16/2000")
    assert policy.preferred_batch_size == (16,) and policy.max_queue_delay_us == 2000
    default = revisions.parse_static("0/0")  # Triton's default: no preferred size, no delay
    assert default.preferred_batch_size == () and default.max_queue_delay_us == 0
    for bad in ("16", "x/2", "-1/100", "8/-1"):
        with pytest.raises(argparse.ArgumentTypeError):
            revisions.parse_static(bad)


def test_duplicate_names_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        revisions.main(["--rev", "a=HEAD", "--rev", "a=."])
    assert "names must differ" in capsys.readouterr().err


def test_policy_must_be_one_the_scenario_serves_without_tuning(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for bad in ("no-such-policy", "static"):  # static is tuned per run: --static instead
        with pytest.raises(SystemExit):
            revisions.main(["--rev", "a=.", "--policy", bad])
        assert "--policy must be one of adaptive, adaptive-strict" in capsys.readouterr().err


def test_totals_pool_attainment_per_deadline_over_rounds() -> None:
    def one_round(latency_ms: list[float], deadline_ms: list[float]) -> LoadResult:
        n = len(latency_ms)
        sent = np.linspace(0, 0.5, n)
        samples = Samples(sent, sent, np.asarray(latency_ms) / 1e3, np.zeros(n, dtype=np.int16),
                          np.zeros(n, dtype=bool), np.asarray(deadline_ms) / 1e3)  # fmt: skip
        return LoadResult("open", "127.0.0.1:1", "m", 2, 1.0, 0.05, None, 10.0, 1, samples)

    total = revisions.Total("work", 0.5)
    for res in (one_round([20, 20, 5], [15, 50, 15]), one_round([20, 5], [15, 50])):
        total.add(res, res.summary(lag_limit_ms=math.inf))
    assert (total.sent, total.on_time) == (5, 3)
    assert total.slo_by_deadline_ms == {"15": pytest.approx(1 / 3), "50": 1.0}
    assert "SLO 0.600 (15 ms 0.333, 50 ms 1.000)" in total.line()


@needs_git
def test_an_unknown_revision_is_refused_before_any_server_starts() -> None:
    with pytest.raises(RunError, match="cannot check out 'no-such-revision'"):
        revisions.run(
            SCENARIOS["batcher-poisson"], [("x", "no-such-revision")],
            fractions=[0.2], seconds=0.5, rounds=1,
        )  # fmt: skip


@needs_git
def test_a_committed_revision_and_the_working_tree_take_turns(tmp_path: Path) -> None:
    before = _worktrees()
    lines: list[str] = []
    report = revisions.run(
        SCENARIOS["batcher-poisson"],
        [("head", "HEAD"), ("work", ".")],
        fractions=[0.2],
        seconds=0.6,
        rounds=2,
        statics=[revisions.parse_static("8/1000")],
        policy=next(
            p for p in SCENARIOS["batcher-poisson"].policies if p.name == "adaptive-strict"
        ),
        warmup_s=0.3,
        capacity_s=1.0,
        out=lines.append,
    )
    assert report["capacity_rps"] > 0  # type: ignore[operator]
    assert report["policy"] == "adaptive-strict"
    runs = report["runs"]
    assert isinstance(runs, list)
    # Round-robin: each round visits every variant before the next round starts.
    order = [(r["round"], r["variant"]) for r in runs]
    assert order == [(0, "head"), (0, "work"), (0, "static-p8/1000us"),
                     (1, "head"), (1, "work"), (1, "static-p8/1000us")]  # fmt: skip
    totals = {t["variant"]: t for t in report["totals"]}  # type: ignore[attr-defined]
    assert set(totals) == {"head", "work", "static-p8/1000us"}
    for total in totals.values():
        assert total["sent"] > 0
        assert 0.0 <= total["slo_attainment"] <= 1.0
        assert not math.isnan(total["goodput_rps"])
    assert totals["static-p8/1000us"]["refused"] == 0.0  # Triton's batcher admits all
    assert any(line.startswith("totals") for line in lines)
    # The temporary worktree is gone again.
    assert _worktrees() == before
