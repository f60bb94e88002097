"""How far a batch run is: a tqdm bar with rows/s and ETA on a terminal, a
log line every ``interval_s`` otherwise (orchestrators keep logs, not bars)."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, TextIO

log = logging.getLogger("inferd.batch")


class Progress:
    def __init__(
        self, total_rows: int | None, *, stream: TextIO | None = None, interval_s: float = 10.0
    ) -> None:
        self.total = total_rows
        self.done = 0
        self.skipped = 0
        self.interval_s = interval_s
        self._start = self._last = time.monotonic()
        stream = stream if stream is not None else sys.stderr
        self._bar: Any = None
        if stream.isatty():
            from tqdm import tqdm

            self._bar = tqdm(
                total=total_rows, unit="rows", unit_scale=True, file=stream, dynamic_ncols=True
            )

    def skip(self, rows: int) -> None:
        """Rows a previous run finished: counted, not timed."""
        self.done += rows
        self.skipped += rows
        if self._bar is not None:
            self._bar.update(rows)

    def advance(self, rows: int) -> None:
        self.done += rows
        if self._bar is not None:
            self._bar.update(rows)
            return
        now = time.monotonic()
        if now - self._last >= self.interval_s:
            self._last = now
            log.info("%s", self.line(now), extra={"event": "batch_progress", "rows": self.done})

    def line(self, now: float | None = None) -> str:
        elapsed = max(1e-9, (now or time.monotonic()) - self._start)
        rate = (self.done - self.skipped) / elapsed
        if self.total:
            left = max(0, self.total - self.done)
            eta = f", ETA {left / rate:.0f} s" if rate > 0 else ""
            share = 100 * self.done / self.total
            return f"{self.done}/{self.total} rows ({share:.0f}%), {rate:.0f} rows/s{eta}"
        return f"{self.done} rows, {rate:.0f} rows/s"

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
