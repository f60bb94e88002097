"""The GPU benchmark scenario on a machine without a GPU: it must skip
clearly (exit 0, or 2 when a GPU is required) and format its report."""

from __future__ import annotations

import pytest

from benchmarks import gpu_scenario
from benchmarks.gpu_scenario import Point, table


@pytest.mark.skipif(gpu_scenario.gpu_unavailable() is None, reason="a GPU is available here")
def test_skips_clearly_without_a_gpu(capsys: pytest.CaptureFixture[str]) -> None:
    assert gpu_scenario.main(["--seconds", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("SKIP: the GPU scenario needs TensorRT and an NVIDIA GPU: ")
    assert gpu_scenario.main(["--require-gpu"]) == 2


def test_arguments_are_checked() -> None:
    with pytest.raises(SystemExit):
        gpu_scenario.main(["--batch-sizes", "0,8"])
    with pytest.raises(SystemExit):
        gpu_scenario.main(["--precision", "int8"])


def test_table() -> None:
    points = [
        Point(1, 1000.0, 0.5, 0.9, 800.0, 1.0, 2.5),
        Point(64, 64000.0, 1.0, 1.2),
    ]
    text = table(points).splitlines()
    assert "served/raw" in text[0]
    assert text[1].split() == ["1", "1000", "0.90", "800", "1.00", "2.50", "0.80"]
    assert text[2].split()[-4:] == ["-", "-", "-", "-"]
