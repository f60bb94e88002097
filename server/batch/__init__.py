"""Batch prediction: files in, Parquet predictions out, resumable.

``inferd batch`` (``server.batch.cli``) and ``run_batch`` score input files
with a model version loaded from a repository the way ``inferd serve``
loads it, through the same data plane, scheduler and engine, so offline
answers are the online ones. See docs/batch.md.

    from inferd.server.batch import BatchJob, run_batch
    summary = asyncio.run(run_batch(BatchJob("digits_mlp", ["rows.parquet"], Path("out"),
                                             repository=Path("models"))))
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from inferd.server.batch.errors import BatchError
from inferd.server.batch.job import BatchJob

if TYPE_CHECKING:
    from inferd.server.batch.runner import Summary, run_batch

__all__ = ["BatchError", "BatchJob", "Summary", "run_batch"]


def __getattr__(name: str) -> Any:
    # The runner needs pyarrow (the batch extra); importing the package for
    # the CLI's parser must not, so it can name the missing extra.
    if name in ("Summary", "run_batch"):
        from inferd.server.batch import runner

        return getattr(runner, name)
    raise AttributeError(name)
