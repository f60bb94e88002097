"""What one batch run is asked to do: ``inferd batch``'s flags, or the Python API's arguments."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

#: Rows per output part: what a kill can lose and a re-run redoes at most.
DEFAULT_PART_ROWS = 65536


@dataclass(frozen=True)
class BatchJob:
    """``model`` scored from ``inputs`` (paths or globs) into ``output``.

    ``repository``: score in this process from this model repository (as
    ``inferd serve`` loads it); ``url``: send the rows to a running server
    instead (streaming gRPC). ``column_map`` maps a column name to the
    model input it feeds (columns named like inputs need no entry).
    ``key``: a column copied to every output row unchanged. ``batch_size``:
    rows per inference call; 0 takes the model's ``max_batch_size``.
    ``max_error_fraction``: bad rows allowed, as a fraction of all rows.
    """

    model: str
    inputs: Sequence[str]
    output: Path
    repository: Path | None = None
    url: str | None = None
    version: str = ""
    column_map: Mapping[str, str] = field(default_factory=dict)
    key: str | None = None
    #: Outputs to write, in this order; empty writes every output.
    outputs: Sequence[str] = ()
    batch_size: int = 0
    part_rows: int = DEFAULT_PART_ROWS
    max_error_fraction: float = 0.0

    def identity(self) -> dict[str, object]:
        """What must match for a re-run to reuse this folder's finished parts."""
        return {
            "model": self.model,
            "version": self.version,
            "column_map": dict(sorted(self.column_map.items())),
            "key": self.key,
            "outputs": list(self.outputs),
            "part_rows": self.part_rows,
        }
