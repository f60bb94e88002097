"""The audit log on its own: append, read back newest first, survive reopening."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from inferd.server.audit import MAX_REASON, AuditError, AuditLog


def test_entries_survive_reopening_newest_first(tmp_path: Path) -> None:
    log = AuditLog(tmp_path, replica="r1")
    t0 = time.time_ns()
    log.record(
        principal="alice",
        action="promote",
        model="a",
        before={"champion": 1},
        after={"champion": 2},
        reason="ship it",
    )
    log.record(principal="bob", action="rollback", model="b", before={}, after={})
    log.close()

    reopened = AuditLog(tmp_path, replica="r2")
    first, second = reopened.entries()[::-1]
    assert (first.principal, first.action, first.model, first.reason) == (
        "alice",
        "promote",
        "a",
        "ship it",
    )
    assert json.loads(first.before) == {"champion": 1} and json.loads(first.after) == {
        "champion": 2
    }
    assert first.replica == "r1"
    assert t0 <= first.time_ns <= second.time_ns <= time.time_ns()
    assert second.id > first.id
    assert [e.model for e in reopened.entries(model="b")] == ["b"]
    assert len(reopened.entries(limit=1)) == 1
    reopened.record(principal="carol", action="set_stage:staging", model="a", before={}, after={})
    assert [e.principal for e in reopened.entries()] == ["carol", "bob", "alice"]
    reopened.close()


def test_no_log_file_until_something_is_recorded(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "state")
    assert log.entries() == []
    assert not (tmp_path / "state").exists()


def test_long_reasons_are_cut(tmp_path: Path) -> None:
    log = AuditLog(tmp_path)
    entry = log.record(
        principal="p", action="a", model="m", before=None, after=None, reason="x" * 5000
    )
    assert len(entry.reason) == MAX_REASON
    assert len(log.entries()[0].reason) == MAX_REASON
    log.close()


def test_unwritable_log_is_an_error_without_paths(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    log = AuditLog(blocker / "state")
    with pytest.raises(AuditError) as info:
        log.record(principal="p", action="a", model="m", before=None, after=None)
    assert str(tmp_path) not in str(info.value)
