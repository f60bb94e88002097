"""Credential files that are re-read when they change, and their one error."""

from __future__ import annotations

import os
import time
from pathlib import Path


class AuthConfigError(Exception):
    """A tokens or keys file cannot be used; one line for the operator."""


class WatchedFile:
    """A file re-read when its mtime/size/inode change, checked at most every ``interval`` s."""

    def __init__(self, path: Path, interval: float = 1.0) -> None:
        self.path = path
        self._interval = interval
        self._checked = 0.0
        self._stamp: tuple[int, int, int] | None = None

    def stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def changed(self, *, force: bool = False) -> bool:
        """True (once) when the file changed since the last ``read``."""
        now = time.monotonic()
        if not force and now - self._checked < self._interval:
            return False
        self._checked = now
        return force or self.stamp() != self._stamp

    def read(self) -> str:
        stamp = self.stamp()
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise AuthConfigError(f"cannot read {self.path}: {exc}") from None
        self._stamp = stamp
        return text
