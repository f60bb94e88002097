"""A run killed with SIGKILL and re-run writes exactly the rows a clean run writes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.batch.batch_data import digits_rows, write_parquet

ROOT = Path(__file__).resolve().parents[2]
ROWS = 12000
PART_ROWS = 40


def command(repo: Path, source: Path, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "inferd", "batch", "digits_mlp",
        "--model-repository", str(repo), "--input", str(source), "--output", str(out),
        "--key", "id", "--part-rows", str(PART_ROWS), "--batch-size", "16",
    ]  # fmt: skip


def finished_parts(out: Path) -> int:
    try:
        return len(json.loads((out / "manifest.json").read_text())["parts"])
    except (OSError, ValueError, KeyError):
        return 0  # not written yet (or being replaced: the rename is atomic, the read is not)


def kill_after(cmd: list[str], out: Path, parts: int) -> int:
    """Start the run, SIGKILL it once ``parts`` parts are recorded; the parts then recorded."""
    child = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while finished_parts(out) < parts and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(child.pid, signal.SIGKILL)
    _, err = child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL, err.decode()[-2000:]
    return finished_parts(out)


def test_killed_runs_resume_to_exactly_the_clean_rows(
    demo_repository: Path, tmp_path: Path
) -> None:
    keys, pixels = digits_rows(ROWS)
    source = write_parquet(tmp_path / "in.parquet", keys, pixels)
    clean, resumed = tmp_path / "clean", tmp_path / "resumed"
    subprocess.run(command(demo_repository, source, clean), cwd=ROOT, check=True, timeout=300)

    total_parts = ROWS // PART_ROWS
    first = kill_after(command(demo_repository, source, resumed), resumed, 5)
    second = kill_after(command(demo_repository, source, resumed), resumed, first + 20)
    if second >= total_parts:
        pytest.fail("the run finished before it was killed; make it longer")
    assert first >= 5 and second > first  # the second run kept the first one's parts

    result = subprocess.run(
        command(demo_repository, source, resumed),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    manifest = json.loads((resumed / "manifest.json").read_text())
    assert manifest["complete"] and manifest["totals"]["rows"] == ROWS
    assert not list(resumed.glob(".tmp-*"))

    expected = pq.read_table(sorted(clean.glob("part-*.parquet")))
    got = pq.read_table(sorted(resumed.glob("part-*.parquet")))
    ids = got.column("id").to_pylist()
    assert len(ids) == len(set(ids)) == ROWS  # none missing, none duplicated
    assert got.equals(expected)


def test_a_folder_of_another_job_is_refused(demo_repository: Path, tmp_path: Path) -> None:
    keys, pixels = digits_rows(50)
    source = write_parquet(tmp_path / "in.parquet", keys, pixels)
    out = tmp_path / "out"
    subprocess.run(command(demo_repository, source, out), cwd=ROOT, check=True, timeout=300)
    other_keys, other = digits_rows(50, seed=3)
    write_parquet(source, other_keys, other)  # same path, other data
    result = subprocess.run(
        command(demo_repository, source, out),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: output folder") and "(different inputs)" in last
