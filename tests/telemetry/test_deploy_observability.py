"""deploy/observability: the Grafana dashboard and the Prometheus alert rules
refer only to what a real server exports, and promtool accepts them."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from prometheus_client.metrics_core import Metric
from telemetry_helpers import ROOT, fake_gpus, scrape

from inferd.clients import InferenceClient, InferenceServerError
from inferd.server.telemetry.metrics import GpuCollector

DEPLOY = ROOT / "deploy" / "observability"
DASHBOARD = DEPLOY / "inferd-dashboard.json"
ALERTS = DEPLOY / "alerts.yaml"
ALERT_TESTS = DEPLOY / "alerts_test.yaml"
#: Labels Prometheus adds to every series it scrapes.
TARGET_LABELS = {"job", "instance"}
GRAFANA_VARIABLES = {"job": ".*", "model": ".*", "version": ".*", "__rate_interval": "5m"}
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_SELECTOR = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*(\{[^}]*\})?\s*(\()?")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}


def selectors(expr: str) -> tuple[list[tuple[str, set[str]]], set[str]]:
    """The metric selectors of a PromQL expression (name, matcher label names)
    and the label names its by/without/on clauses group by."""
    text = re.sub(r"\[[^\]]*\]", "", expr)  # ranges, with $__rate_interval
    grouped = {
        label.strip()
        for _, labels in _GROUPING.findall(text)
        for label in labels.split(",")
        if label.strip()
    }
    text = _GROUPING.sub("", text)
    found = []
    for match in _SELECTOR.finditer(re.sub(r'"(?:[^"\\]|\\.)*"', '""', text)):
        name, matchers, call = match.groups()
        start = match.start()
        if call or name in _KEYWORDS or (start and text[start - 1] == "$"):
            continue
        # The matchers of the original text (the string-free copy has the same offsets).
        labels = set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", matchers or ""))
        found.append((name, labels))
    return found, grouped


def test_selector_extraction() -> None:
    found, grouped = selectors(
        'histogram_quantile(0.99, sum by (le, model) (rate(a_bucket{model=~"$model", '
        'code!="OK"}[$__rate_interval]))) / on (model) b_total > bool 3 and c'
    )
    assert found == [("a_bucket", {"model", "code"}), ("b_total", set()), ("c", set())]
    assert grouped == {"le", "model"}


@pytest.fixture(scope="module")
def exported(
    demo_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, set[str] | None]]:
    """Sample name -> label names (None: the family exists but has no series
    yet), from a real scrape of a server that has served, failed and refused
    requests and reports a (fake) GPU."""
    from conftest import ServerThread

    import inferd.server.app as server_app
    from inferd.server.app import ServerConfig

    saved = server_app.GpuCollector
    server_app.GpuCollector = lambda: GpuCollector(fake_gpus)  # type: ignore[assignment, misc]
    try:
        thread = ServerThread(
            ServerConfig(model_repository=demo_repository, grpc_port=0, metrics_port=0)
        ).start()
    finally:
        server_app.GpuCollector = saved  # type: ignore[misc]
    try:
        with InferenceClient(thread.address) as client:
            client.infer("digits_mlp", {"pixels": np.ones((2, 64), np.float32)})
            with pytest.raises(InferenceServerError):
                client.infer(
                    "digits_mlp",
                    {"pixels": np.ones((1, 64), np.float32)},
                    parameters={"timeout": 1},
                )
        assert thread.server is not None and thread.server.metrics is not None
        families: list[Metric] = scrape(thread.server.metrics_port)
        # Label names of families with no series yet (nothing expired, say).
        assert thread.server.monitoring is not None  # on by default with metrics
        families_of = [thread.server.metrics, thread.server.monitoring.metrics]
        declared = {
            m._name: set(m._labelnames)
            for metrics in families_of
            for m in vars(metrics).values()
            if hasattr(m, "_labelnames")
        }
    finally:
        thread.stop()
    names: dict[str, set[str] | None] = {}
    suffixes = {
        "histogram": ("_bucket", "_sum", "_count"),
        "counter": ("_total",),
        "gauge": ("",),
    }
    for family in families:
        for suffix in suffixes.get(family.type, ("",)):
            labels = declared.get(family.name)
            if labels is not None and family.type == "histogram":
                labels = labels | {"le"} if suffix == "_bucket" else labels
            names.setdefault(family.name + suffix, labels)
        for s in family.samples:
            labels = names.get(s.name) or set()
            names[s.name] = labels | set(s.labels)
    yield names


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def _dashboard_exprs() -> list[tuple[str, str]]:
    out = []
    for panel in _dashboard()["panels"]:
        for target in panel.get("targets", []):
            out.append((f"{panel['title']} / {target['refId']}", target["expr"]))
    return out


def _alert_rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(ALERTS.read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def _check_exprs(
    exprs: list[tuple[str, str]], exported: dict[str, set[str] | None], recorded: set[str]
) -> set[str]:
    used: set[str] = set()
    for where, expr in exprs:
        found, grouped = selectors(expr)
        assert found, f"{where}: no metric in {expr!r}"
        available: set[str] = set(TARGET_LABELS)
        for name, labels in found:
            if name in recorded:
                continue
            assert name in exported, f"{where}: {name} is not exported by inferd"
            used.add(name)
            known = exported[name]
            if known is None:
                continue  # exported, but no series in this scrape to read labels from
            assert labels <= known | TARGET_LABELS, f"{where}: {name} has no {labels - known}"
            available |= known
        assert grouped <= available | {"le"}, f"{where}: groups by {grouped - available}"
    return used


def test_dashboard_structure() -> None:
    dash = _dashboard()
    assert dash["uid"] and dash["title"] and dash["schemaVersion"] >= 36
    variables = {v["name"] for v in dash["templating"]["list"]}
    assert {"datasource", "job", "model", "version"} <= variables
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dash["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24 and pos["h"] > 0
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs))
        for target in panel["targets"]:
            for var in re.findall(r"\$(\w+)", target["expr"]):
                assert var in variables | {"__rate_interval"}, f"{panel['title']}: ${var}"


def test_dashboard_covers_what_sres_ask_for() -> None:
    exprs = " ".join(e for _, e in _dashboard_exprs())
    for needed in (
        "histogram_quantile(0.99, sum by (le, model, version) "
        "(rate(inferd_request_duration_seconds_bucket",  # latency percentiles
        "histogram_quantile(0.5, sum by (le, model, version) "
        "(rate(inferd_request_duration_seconds_bucket",
        "rate(inferd_requests_total",  # throughput and errors
        'code!="OK"',
        "inferd_queue_duration_seconds_bucket",
        "inferd_pending_requests",
        "inferd_batch_size_bucket",
        "inferd_compute_duration_seconds_bucket",
        "inferd_requests_refused_total",
        "inferd_model_ready_versions",
        # Model monitoring (docs/monitoring.md).
        "inferd_drift_psi{",
        "inferd_drift_challenger_psi",
        "inferd_input_bad_rows_total",
        "inferd_feature_age_seconds_bucket",
        "inferd_cost_total",
        "inferd_gpu_seconds_total",
        "inferd:latency_slo_errors:ratio_rate1h",
    ):
        assert needed in exprs, needed
    # Per model and version wherever the metric has a version label.
    for where, expr in _dashboard_exprs():
        for name, labels in selectors(expr)[0]:
            if name.startswith("inferd_") and "model" in labels:
                assert 'model=~"$model"' in expr, where


def test_every_dashboard_and_alert_metric_is_exported(
    exported: dict[str, set[str] | None],
) -> None:
    rules = _alert_rules()
    recorded = {r["record"] for r in rules if "record" in r}
    used = _check_exprs(_dashboard_exprs(), exported, recorded)
    used |= _check_exprs(
        [(r.get("alert") or r["record"], r["expr"]) for r in rules], exported, recorded
    )
    assert "inferd_gpu_utilization_ratio" in used and "process_cpu_seconds_total" in used


def test_alert_rules_structure() -> None:
    rules = _alert_rules()
    alerts = {r["alert"]: r for r in rules if "alert" in r}
    assert set(alerts) == {
        "InferdLatencyP99OverBudget",
        "InferdErrorRatioHigh",
        "InferdRefusalSpike",
        "InferdModelNotReady",
        "InferdGuardrailRollback",
        "InferdShadowDisagreement",
        "InferdDrift",
        "InferdChallengerDrift",
        "InferdInputQualitySpike",
        "InferdStaleFeatures",
        "InferdCostPer1kRequestsOverBudget",
        "InferdLatencyBudgetBurnFast",
        "InferdLatencyBudgetBurnSlow",
    }
    for name, rule in alerts.items():
        assert re.fullmatch(r"\d+[smh]", rule["for"]), name
        assert rule["labels"]["severity"] in ("page", "warn"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        reason = "promtool not installed (Debian: apt-get install prometheus)"
        if os.environ.get("INFERD_REQUIRE_PROMTOOL") == "1":
            pytest.fail(f"INFERD_REQUIRE_PROMTOOL=1 but {reason}")
        pytest.skip(reason)
    return path


def _run(args: list[str], cwd: Path) -> None:
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_checks_and_unit_tests_the_alert_rules() -> None:
    promtool = _promtool()
    _run([promtool, "check", "rules", ALERTS.name], DEPLOY)
    _run([promtool, "test", "rules", ALERT_TESTS.name], DEPLOY)


def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    promtool = _promtool()
    rules = []
    for i, (_, expr) in enumerate(_dashboard_exprs()):
        for var, val in GRAFANA_VARIABLES.items():
            expr = expr.replace(f"${var}", val)
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard_rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    _run([promtool, "check", "rules", str(path)], tmp_path)
