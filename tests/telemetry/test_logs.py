"""Structured logs: the formatters, and what ``inferd serve`` writes."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from telemetry_helpers import Inferd, MakeTracing

from inferd.clients import InferenceClient
from inferd.server.telemetry.logs import JsonFormatter, TextFormatter, resolve_format, setup_logging


def _record(message: str = "model %s ready", *args: object, **extra: object) -> logging.LogRecord:
    logger = logging.getLogger("inferd.test")
    record = logger.makeRecord("inferd.test", logging.INFO, __file__, 1, message, args, None)
    for key, val in extra.items():
        setattr(record, key, val)
    return record


def test_json_line_has_the_standard_fields_and_extras() -> None:
    line = JsonFormatter().format(_record("model %s ready", "digits", event="model_loaded"))
    data = json.loads(line)
    assert data["message"] == "model digits ready"
    assert data["level"] == "INFO" and data["logger"] == "inferd.test"
    assert data["event"] == "model_loaded"
    assert data["ts"].endswith("Z") and "T" in data["ts"]
    assert isinstance(data["pid"], int)
    assert "trace_id" not in data and "span_id" not in data  # not in a span


def test_json_line_inside_a_span_carries_its_ids(make_tracing: MakeTracing) -> None:
    tracing, _ = make_tracing()
    with tracing.tracer.start_as_current_span("work") as span:
        data = json.loads(JsonFormatter().format(_record("inside")))
    ctx = span.get_span_context()
    assert data["trace_id"] == format(ctx.trace_id, "032x")
    assert data["span_id"] == format(ctx.span_id, "016x")


def test_json_line_keeps_exceptions_and_odd_values_on_one_line() -> None:
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        logger = logging.getLogger("inferd.test")
        record = logger.makeRecord(
            "inferd.test", logging.ERROR, __file__, 1, "failed", (), __import__("sys").exc_info()
        )
    record.path = Path("/x")  # not JSON-serialisable: written as text
    line = JsonFormatter().format(record)
    assert "\n" not in line
    data = json.loads(line)
    assert "ValueError: bad" in data["exc_info"] and data["path"] == "/x"


def test_json_extras_never_replace_the_standard_fields() -> None:
    record = _record("ready", ts="then", level="LOUD", logger="other", pid="me", event="e")
    data = json.loads(JsonFormatter().format(record))
    assert data["level"] == "INFO" and data["logger"] == "inferd.test"
    assert isinstance(data["pid"], int) and data["ts"].endswith("Z")
    assert data["event"] == "e"


def test_json_line_keeps_non_ascii_text_as_is() -> None:
    line = JsonFormatter().format(_record("modèle %s prêt", "chiffres"))
    assert "modèle chiffres prêt" in line


def test_text_line_is_readable_with_extras() -> None:
    line = TextFormatter().format(_record("model %s ready", "digits", model="digits"))
    assert line.endswith("INFO inferd.test: model digits ready model=digits")


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_auto_format_is_json_unless_a_person_watches() -> None:
    assert resolve_format("auto", io.StringIO()) == "json"
    assert resolve_format("auto", _Tty()) == "text"
    assert resolve_format("text", io.StringIO()) == "text"
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        setup_logging("INFO", "auto", stream)
        logging.getLogger("inferd.x").info("hello", extra={"event": "e"})
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])
    assert json.loads(stream.getvalue())["event"] == "e"


def _events(lines: list[str]) -> list[dict[str, object]]:
    return [json.loads(line) for line in lines]


def test_serve_logs_one_json_line_per_lifecycle_event(
    demo_repository: Path, tmp_path: Path
) -> None:
    repo = tmp_path / "models"
    repo.mkdir()
    (repo / "digits_mlp").symlink_to(demo_repository / "digits_mlp")
    (repo / "broken" / "1").mkdir(parents=True)
    (repo / "broken" / "1" / "model.onnx").write_bytes(b"junk")
    # digits_mlp links to the session's demo repository, outside this one.
    server = Inferd(
        repo,
        tmp_path / "stderr.log",
        "--log-format",
        "json",
        "--allow-links-outside-repository",
        "true",
    )
    try:
        server.wait_ready(model="digits_mlp")  # the server is never ready: broken fails
        with InferenceClient(server.address) as client:
            client.infer("digits_mlp", {"pixels": np.ones((1, 64), np.float32)})
    finally:
        assert server.stop() == 0
    lines = server.log_lines()
    records = _events(lines)  # every line is JSON
    events = [(r.get("event"), r.get("model")) for r in records if r.get("event")]
    assert ("listening", None) in events and ("startup", None) in events
    assert ("model_loaded", "digits_mlp") in events
    assert ("model_load_failed", "broken") in events
    assert ("model_unloaded", "digits_mlp") in events and ("shutdown", None) in events
    failed = next(r for r in records if r.get("event") == "model_load_failed")
    assert failed["level"] == "ERROR" and failed["version"] == 1
    assert not [r for r in records if r.get("event") == "request"]  # off by default
    assert "Traceback" not in "\n".join(lines)


@pytest.mark.parametrize("fmt", ["text", "auto"])
def test_serve_text_and_auto_formats(demo_repository: Path, tmp_path: Path, fmt: str) -> None:
    server = Inferd(demo_repository, tmp_path / "stderr.log", "--log-format", fmt)
    try:
        server.wait_ready()
    finally:
        assert server.stop() == 0
    lines = server.log_lines()
    if fmt == "auto":  # stderr is a file here: json
        assert all(json.loads(line) for line in lines)
    else:
        assert any("event=model_loaded" in line for line in lines)
        assert not any(line.startswith("{") for line in lines)
