"""Log formatting: JSON lines for machines, text for people.

``--log-format json`` writes one JSON object per line with ``ts`` (UTC,
RFC 3339, milliseconds), ``level``, ``logger``, ``message``, ``pid``,
``trace_id``/``span_id`` when logged inside a span (so a log line leads to
its trace), every ``extra={...}`` field (``event``, ``model``, ``version``,
``reason``...) and ``exc_info`` (the traceback) for exceptions. ``text``
writes the same fields as one readable line. ``auto`` (the default) picks
json when stderr is not a terminal (containers, systemd, log shippers) and
text when a person is watching.
"""

from __future__ import annotations

import datetime
import logging
import sys
from typing import Any, TextIO

from opentelemetry import trace
from pythonjsonlogger import json as jsonlogger
from pythonjsonlogger.core import RESERVED_ATTRS

FORMATS = ("auto", "json", "text")

#: Attributes every LogRecord has; anything else came from ``extra``.
_STANDARD = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys() | {"message", "asctime"}
)


def _trace_ids() -> tuple[str, str] | None:
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


def _timestamp(record: logging.LogRecord) -> str:
    ts = datetime.datetime.fromtimestamp(record.created, tz=datetime.timezone.utc)
    return ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")


#: The standard keys; an ``extra`` field of the same name is dropped rather
#: than replacing one.
_OWN_KEYS = ("ts", "level", "logger", "message", "pid", "trace_id", "span_id")


class JsonFormatter(jsonlogger.JsonFormatter):
    """python-json-logger (extras, exceptions, encoding) with our keys: ``ts``
    first, the record's level, logger and pid renamed, and trace ids."""

    def __init__(self) -> None:
        super().__init__(
            "{levelname}{name}{message}{process}",
            style="{",
            rename_fields={"levelname": "level", "name": "logger", "process": "pid"},
            reserved_attrs=[*RESERVED_ATTRS, *_OWN_KEYS],
            json_default=str,
            json_ensure_ascii=False,
        )

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        log_data["ts"] = _timestamp(record)
        super().add_fields(log_data, record, message_dict)
        ids = _trace_ids()
        if ids is not None:
            log_data["trace_id"], log_data["span_id"] = ids


class TextFormatter(logging.Formatter):
    """``ts LEVEL logger: message key=value ...`` (extras and trace ids last)."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [f"{_timestamp(record)} {record.levelname} {record.name}: {record.getMessage()}"]
        fields = _extras(record)
        ids = _trace_ids()
        if ids is not None:
            fields["trace_id"], fields["span_id"] = ids
        parts.extend(f"{k}={v}" for k, v in fields.items())
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def resolve_format(name: str, stream: TextIO | None = None) -> str:
    if name != "auto":
        return name
    stream = stream or sys.stderr
    isatty = getattr(stream, "isatty", None)
    return "text" if isatty is not None and isatty() else "json"


def setup_logging(level: str = "INFO", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Configure the root logger once per process (workers call it too)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    chosen = resolve_format(fmt, stream)
    handler.setFormatter(JsonFormatter() if chosen == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
