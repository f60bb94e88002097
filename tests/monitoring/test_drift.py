"""Drift end to end: a reference written by ``inferd monitor reference``,
traffic from the same distribution (no alarm over 12 windows), then shifted
traffic (the gauge crosses the threshold), and the alert rule fed with the
scraped series in a promtool unit test."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from monitoring_helpers import MODEL, digits, digits_repository, metric, wait_until

from inferd.clients import InferenceClient
from inferd.clients.cli import models_main
from inferd.server.monitoring.cli import main as monitor_main
from inferd.server.monitoring.reference import REFERENCE_PATH

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "observability" / "alerts.yaml"
THRESHOLD = 0.2
WINDOW_ROWS = 800
STEP_ROWS = WINDOW_ROWS // 4  # the window slides by a quarter
TENSORS = ("pixels", "probabilities", "probabilities:class")


def _window_after(client: InferenceClient, port: int, rows: np.ndarray) -> dict[str, float]:
    """Send one slide of rows, wait for the thread to evaluate, read the gauges."""
    labels = {"model": MODEL, "version": "1"}
    before = metric(port, "inferd_drift_windows_total", **labels)
    for chunk in np.array_split(rows, -(-len(rows) // 50)):
        client.infer(MODEL, {"pixels": chunk})
    wait_until(
        lambda: metric(port, "inferd_drift_windows_total", **labels) > before,
        what="a drift window",
    )
    return {t: metric(port, "inferd_drift_psi", tensor=t, **labels) for t in TENSORS}


def _promtool_series(psi: list[float]) -> dict[str, Any]:
    """A promtool unit test: one scraped window per minute, then the last
    value held (a real scrape keeps reading the gauge between windows)."""
    labels = f'model="{MODEL}",version="1",tensor="pixels",job="inferd",instance="a:9"'
    values = " ".join(f"{v:.6f}" for v in psi)
    unshifted = psi.index(next(v for v in psi if v > THRESHOLD))
    minutes = len(psi) + 20
    return {
        "rule_files": [str(ALERTS)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {
                        "series": f"inferd_drift_psi{{{labels}}}",
                        "values": f"{values} {psi[-1]:.6f}x20",
                    },
                    {
                        "series": 'inferd_drift_psi_threshold{job="inferd",instance="a:9"}',
                        "values": f"{THRESHOLD}x{minutes}",
                    },
                ],
                "alert_rule_test": [
                    {"eval_time": f"{unshifted}m", "alertname": "InferdDrift", "exp_alerts": []},
                    {
                        "eval_time": f"{minutes}m",
                        "alertname": "InferdDrift",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "warn",
                                    "model": MODEL,
                                    "version": "1",
                                    "tensor": "pixels",
                                    "job": "inferd",
                                    "instance": "a:9",
                                },
                                "exp_annotations": _annotations(),
                            }
                        ],
                    },
                ],
            }
        ],
    }


def _annotations() -> dict[str, str]:
    rules = yaml.safe_load(ALERTS.read_text())["groups"]
    (rule,) = [r for g in rules for r in g["rules"] if r.get("alert") == "InferdDrift"]
    return {
        k: v.replace("{{ $labels.model }}", MODEL)
        .replace("{{ $labels.version }}", "1")
        .replace("{{ $labels.tensor }}", "pixels")
        for k, v in rule["annotations"].items()
    }


def test_shifted_inputs_raise_drift_over_threshold_and_fire_the_alert(
    demo_repository: Path, make_server: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repository = digits_repository(demo_repository, tmp_path / "models")
    data = digits()
    rng = np.random.default_rng(7)
    order = rng.permutation(len(data))
    known, traffic = data[order[:1000]], data[order[1000:]]
    np.save(tmp_path / "reference.npy", known)
    argv = ["reference", MODEL, "--input", str(tmp_path / "reference.npy")]
    assert monitor_main([*argv, "--model-repository", str(repository)]) == 0
    capsys.readouterr()  # the command's summary line
    written = json.loads((repository / MODEL / REFERENCE_PATH).read_text())
    assert written["rows"] == 1000 and written["format_version"] == 1

    server = make_server(
        repository,
        metrics_port=0,
        monitor_sample_rate=1.0,
        drift_window_rows=WINDOW_ROWS,
        drift_min_rows=WINDOW_ROWS // 2,
        drift_psi_threshold=THRESHOLD,
        monitor_interval_s=0.05,
    )
    port = server.server.metrics_port
    wait_until(lambda: metric(port, "inferd_drift_reference_rows", model=MODEL) == 1000)
    assert metric(port, "inferd_drift_psi_threshold") == THRESHOLD
    series: list[float] = []
    with InferenceClient(server.address) as client:
        # Same distribution: below the threshold in every window (fills first).
        # The first window needs drift_min_rows rows, then each slide adds one step.
        unshifted = [_window_after(client, port, rng.choice(traffic, 2 * STEP_ROWS))]
        for _ in range(12):
            unshifted.append(_window_after(client, port, rng.choice(traffic, STEP_ROWS)))
        for psi in unshifted:
            for tensor in TENSORS:
                assert psi[tensor] < THRESHOLD, (tensor, psi)
        series += [p["pixels"] for p in unshifted]
        # Shifted: brighter, as from a new scanner.
        shifted = []
        for _ in range(6):
            rows = np.clip(rng.choice(traffic, STEP_ROWS) * 1.6 + 3, 0, 16).astype(np.float32)
            shifted.append(_window_after(client, port, rows))
        series += [p["pixels"] for p in shifted]
    assert shifted[-1]["pixels"] > THRESHOLD
    assert shifted[-1]["probabilities"] > THRESHOLD  # the model is less sure of itself
    assert shifted[-1]["pixels"] > 5 * max(p["pixels"] for p in unshifted)

    # The operator's view: `inferd models drift` marks the drifted tensors.
    assert models_main(["drift", MODEL, "--url", server.address]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"PSI threshold {THRESHOLD:g}" and lines[1].split()[2] == "TENSOR"
    table = {line.split()[2]: line.split() for line in lines[2:]}
    assert table["pixels"][5] == "DRIFT" and float(table["pixels"][3]) > THRESHOLD
    assert table["probabilities:class"][5] == "ok"
    assert models_main(["drift", "--json", "--url", server.address]) == 0
    reply = json.loads(capsys.readouterr().out)
    assert reply["monitoring"] and reply["psi_threshold"] == THRESHOLD
    (pixels,) = [t for t in reply["tensors"] if t["tensor"] == "pixels"]
    assert pixels["psi"] == pytest.approx(shifted[-1]["pixels"])
    assert pixels["window_rows"] == WINDOW_ROWS and pixels["reference_rows"] == 1000

    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("INFERD_REQUIRE_PROMTOOL") == "1":
            pytest.fail("INFERD_REQUIRE_PROMTOOL=1 but promtool is not installed")
        pytest.skip("promtool not installed (Debian: apt-get install prometheus)")
    test_file = tmp_path / "drift_test.yaml"
    test_file.write_text(yaml.safe_dump(_promtool_series(series)))
    result = subprocess.run(
        [promtool, "test", "rules", str(test_file)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_models_drift_says_when_monitoring_is_off(
    demo_server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # The shared demo server has no metrics port, so no monitoring.
    assert models_main(["drift", "--url", demo_server.address]) == 0
    assert "monitoring is off" in capsys.readouterr().out
