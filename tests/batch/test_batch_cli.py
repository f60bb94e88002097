"""`inferd batch` as a person or an orchestrator runs it: exit codes, one-line
errors, the JSON summary, a progress bar on a terminal and log lines elsewhere."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from inferd.server.batch.progress import Progress
from tests.batch.batch_data import digits_rows

ROOT = Path(__file__).resolve().parents[2]


def inferd_batch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "inferd", "batch", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_too_many_bad_rows_exit_1_with_a_summary(demo_repository: Path, tmp_path: Path) -> None:
    keys, pixels = digits_rows(20)
    rows: list[list[float] | None] = [r.tolist() for r in pixels]
    rows[2] = None
    pq.write_table(pa.table({"id": keys, "pix": pa.array(rows, pa.list_(pa.float32()))}),
                   tmp_path / "in.parquet")  # fmt: skip
    summary = tmp_path / "summary.json"
    result = inferd_batch(
        "digits_mlp", "--model-repository", str(demo_repository),
        "--input", str(tmp_path / "in.parquet"), "--output", str(tmp_path / "out"),
        "--key", "id", "--map", "pix=pixels", "--summary", str(summary),
    )  # fmt: skip
    assert result.returncode == 1, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith("error: 1 of 20 rows set aside")
    data = json.loads(summary.read_text())
    assert data["exit_code"] == 1
    assert data["totals"] == {"rows": 20, "scored": 19, "errors": 1, "parts": 1}
    assert data["model"]["name"] == "digits_mlp" and data["rows_per_s"] > 0
    assert "batch done: 19 rows scored" in result.stderr  # a log line, not a bar: no TTY


def test_unreadable_input_exit_3_in_one_line(demo_repository: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"id": 1}\n{not json\n')
    summary = tmp_path / "summary.json"
    result = inferd_batch(
        "digits_mlp", "--model-repository", str(demo_repository), "--input", str(broken),
        "--output", str(tmp_path / "out"), "--summary", str(summary),
    )  # fmt: skip
    assert result.returncode == 3
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: cannot read input file {broken}: line 2 is not JSON")
    assert json.loads(summary.read_text())["exit_code"] == 3


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--map", "nonsense"], "--map takes COLUMN=INPUT"),
        (["--max-error-fraction", "2"], "--max-error-fraction within 0..1"),
        (["--batch-size", "-1"], "--batch-size >= 0"),
    ],
)
def test_usage_errors_exit_2(demo_repository: Path, tmp_path: Path, flags: list[str],
                             message: str) -> None:  # fmt: skip
    result = inferd_batch(
        "digits_mlp", "--model-repository", str(demo_repository),
        "--input", str(tmp_path / "x.parquet"), "--output", str(tmp_path / "out"), *flags,
    )  # fmt: skip
    assert result.returncode == 2
    assert message in result.stderr.strip().splitlines()[-1] and "Traceback" not in result.stderr


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal() -> None:
    screen = Terminal()
    progress = Progress(1000, stream=screen)
    progress.skip(100)
    progress.advance(400)
    progress.close()
    text = screen.getvalue()
    assert "50%" in text and "500/1.00k" in text and "rows/s" in text


def test_progress_log_lines_elsewhere(caplog: pytest.LogCaptureFixture) -> None:
    progress = Progress(1000, stream=io.StringIO(), interval_s=0.0)
    with caplog.at_level(logging.INFO, logger="inferd.batch"):
        progress.skip(100)
        progress.advance(400)
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("500/1000 rows (50%)") and "rows/s" in line and "ETA" in line
