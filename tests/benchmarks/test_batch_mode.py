"""benchmarks/batch_mode.py runs end to end on a small file (figures are not judged here)."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.batch_mode import compare, main


def test_a_short_comparison_gives_every_figure(demo_repository: Path, tmp_path: Path) -> None:
    result = compare(demo_repository, "digits_mlp", 600, 2, 0.2, tmp_path)
    assert result.raw_best_batch in (1, 2, 4, 8, 16, 32, 64)
    assert len(result.rounds) == 2
    for r in result.rounds:
        assert r.raw_rows_per_s > 0 and r.batch_rows_per_s > 0
        assert r.raw_rows_per_cpu_s > 0 and r.batch_rows_per_cpu_s > 0
        assert 0 < r.engine_busy <= 1  # engine time over scoring time, one slot
    assert result.median("cpu_ratio") > 0


def test_main_writes_json(demo_repository: Path, tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    argv = ["--model-repository", str(demo_repository), "--model", "digits_mlp",
            "--rows", "300", "--rounds", "1", "--seconds", "0.2", "--json", str(out)]  # fmt: skip
    assert main(argv) == 0
    (entry,) = json.loads(out.read_text())
    assert entry["model"] == "digits_mlp" and len(entry["rounds"]) == 1
