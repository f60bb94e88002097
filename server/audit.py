"""The audit log: who changed what, when, from what to what.

One SQLite database (``audit.sqlite`` in the state directory), append-only:
every change to loaded models, routes and stages is one row with the
principal, the action, the model, the state before and after (JSON) and the
reason given. Rows are committed before the change is acknowledged, so the
log survives a crash or restart. WAL journaling lets several server
processes on one host append to the same file. Blocking calls: run them in
a worker thread.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FILENAME = "audit.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    time_ns   INTEGER NOT NULL,
    principal TEXT NOT NULL,
    action    TEXT NOT NULL,
    model     TEXT NOT NULL,
    before    TEXT NOT NULL,
    after     TEXT NOT NULL,
    reason    TEXT NOT NULL,
    replica   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_model ON audit (model, id);
"""

#: Longest reason kept; the caller's text is untrusted.
MAX_REASON = 1000


class AuditError(Exception):
    """The log cannot be written; a change that cannot be recorded is refused."""


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    time_ns: int
    principal: str
    action: str
    model: str
    before: str
    after: str
    reason: str
    replica: str


def replica_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class AuditLog:
    """Opened on first use, so a server whose state directory is read-only
    still serves (and refuses changes with the reason)."""

    def __init__(self, directory: Path, *, replica: str | None = None) -> None:
        self.path = Path(directory) / FILENAME
        self.replica = replica or replica_name()
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(self.path, timeout=10, check_same_thread=False)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
                conn.executescript(_SCHEMA)
            except (OSError, sqlite3.Error) as exc:
                raise AuditError(f"cannot open the audit log: {_reason(exc)}") from None
            self._conn = conn
        return self._conn

    def record(
        self,
        *,
        principal: str,
        action: str,
        model: str,
        before: Any,
        after: Any,
        reason: str = "",
    ) -> AuditEntry:
        """Append one entry and commit it; raises AuditError when it cannot."""
        before_json = json.dumps(before, sort_keys=True)
        after_json = json.dumps(after, sort_keys=True)
        reason = reason[:MAX_REASON]
        now = time.time_ns()
        with self._lock:
            conn = self._connect()
            try:
                with conn:
                    cursor = conn.execute(
                        "INSERT INTO audit (time_ns, principal, action, model, before, after,"
                        " reason, replica) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            now,
                            principal,
                            action,
                            model,
                            before_json,
                            after_json,
                            reason,
                            self.replica,
                        ),
                    )
            except sqlite3.Error as exc:
                raise AuditError(f"cannot write the audit log: {_reason(exc)}") from None
            row_id = cursor.lastrowid or 0
        return AuditEntry(
            row_id, now, principal, action, model, before_json, after_json, reason, self.replica
        )

    def entries(self, model: str = "", limit: int = 100) -> list[AuditEntry]:
        """Newest first. An absent log has no entries."""
        if self._conn is None and not self.path.exists():
            return []
        query = (
            "SELECT id, time_ns, principal, action, model, before, after, reason, replica"
            " FROM audit"
        )
        args: tuple[Any, ...] = ()
        if model:
            query += " WHERE model = ?"
            args = (model,)
        query += " ORDER BY id DESC LIMIT ?"
        with self._lock:
            try:
                rows = self._connect().execute(query, (*args, limit)).fetchall()
            except sqlite3.Error as exc:
                raise AuditError(f"cannot read the audit log: {_reason(exc)}") from None
        return [AuditEntry(*row) for row in rows]

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _reason(exc: BaseException) -> str:
    # Never the absolute path: messages may reach a remote caller.
    if isinstance(exc, OSError):
        return exc.strerror or "I/O error"
    return str(exc).split(":")[0] if "/" in str(exc) else str(exc)
