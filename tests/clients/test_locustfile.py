"""The locustfile drives a real server headless and enforces its thresholds.

Locust runs in a child process: it monkey-patches the process for gevent."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _locust(address: str, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "locust",
            "-f",
            str(ROOT / "clients" / "locustfile.py"),
            "--headless",
            "-u",
            "4",
            "-r",
            "4",
            "-t",
            "3s",
            "--host",
            address,
            "--csv",
            str(out),
            "--only-summary",
            *extra,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
    )


def _total_row(prefix: Path) -> dict[str, str]:
    with open(f"{prefix}_stats.csv", newline="") as f:
        return next(r for r in csv.DictReader(f) if r["Name"] == "Aggregated")


@pytest.mark.slow
def test_headless_run_writes_csv_and_passes_loose_thresholds(
    server_address: str, tmp_path: Path
) -> None:
    result = _locust(
        server_address, tmp_path / "ok", "--max-p99-ms", "5000", "--max-failure-ratio", "0.0"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    row = _total_row(tmp_path / "ok")
    assert int(row["Request Count"]) > 50
    assert int(row["Failure Count"]) == 0


@pytest.mark.slow
def test_a_missed_p99_threshold_fails_the_run(server_address: str, tmp_path: Path) -> None:
    result = _locust(server_address, tmp_path / "tight", "--max-p99-ms", "0.001")
    assert result.returncode == 1
    assert "p99" in result.stdout + result.stderr


@pytest.mark.slow
def test_failures_count_against_the_failure_ratio(server_address: str, tmp_path: Path) -> None:
    result = _locust(
        server_address,
        tmp_path / "bad",
        "--model",
        "dense_reference",
        "--rows",
        "32",
        "--timeout-ms",
        "0.001",
        "--max-failure-ratio",
        "0.5",
    )
    assert result.returncode == 1
    assert int(_total_row(tmp_path / "bad")["Failure Count"]) > 0
