"""One batch run: read parts, set bad rows aside, score the rest in chunks of
the model's batch size, write each part whole, record it in the manifest.

The reader thread reads and converts up to two parts ahead; two parts are
scored at a time, with ``scorer.concurrency`` calls in flight, so the engine
never waits for a file; Parquet writes run on a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from inferd.server.batch import manifest as manifest_file
from inferd.server.batch import writer
from inferd.server.batch.columns import Converted, convert, one_array, reject_nan_inputs
from inferd.server.batch.errors import BatchError
from inferd.server.batch.job import BatchJob
from inferd.server.batch.manifest import (
    Manifest,
    PartRecord,
    input_entries,
    now_iso,
    part_name,
    resume,
)
from inferd.server.batch.prefetch import Prefetch
from inferd.server.batch.progress import Progress
from inferd.server.batch.reader import InputFile, describe, expand, read_parts
from inferd.server.batch.scoring import LocalScorer, Scorer, score_rows
from inferd.server.batch.summary import Summary, summarize
from inferd.server.model_io import ModelIO

__all__ = ["Summary", "run_batch"]

#: Parts scored at the same time (each is held in memory whole).
PARTS_IN_FLIGHT = 2


@dataclass
class _Part:
    name: str
    file: int
    index: int
    rows: int
    keys: pa.Array | None = None
    converted: Converted | None = None  # None: finished by an earlier run


class _Run:
    def __init__(self, job: BatchJob, scorer: Scorer, files: list[InputFile]) -> None:
        self.job, self.scorer, self.files = job, scorer, files
        io = scorer.io
        self.io: ModelIO = io
        self.order = list(job.outputs) or list(io.outputs)
        unknown = [o for o in self.order if o not in io.outputs]
        if unknown:
            raise BatchError(f"model has no output '{unknown[0]}' (it has {sorted(io.outputs)})")
        self.column_for = {inp: col for col, inp in job.column_map.items()}
        stray = [i for i in self.column_for if i not in io.inputs]
        if stray:
            raise BatchError(
                f"--map names '{stray[0]}', not an input of the model {sorted(io.inputs)}"
            )
        only = next(iter(io.inputs)) if len(io.inputs) == 1 else "array"
        self.npy_column = next((c for c, i in job.column_map.items() if i == only), only)
        self.reject_nan = reject_nan_inputs(scorer.parameters, io)
        self.batch_size = min(job.batch_size or scorer.batch_size, scorer.batch_size)
        self.key_name = job.key or writer.ROW_COLUMN
        self.calls = asyncio.Semaphore(scorer.concurrency)
        self.saving = asyncio.Lock()
        self.manifest = Manifest(job.identity(), scorer.describe(), input_entries(files))

    # -- reader thread -----------------------------------------------------------------------

    def parts(self, finished: set[str]) -> Iterator[_Part]:
        offset = 0
        for f, source in enumerate(self.files):
            for p, table in enumerate(read_parts(source, self.job.part_rows, self.npy_column)):
                name, rows = part_name(f, p), table.num_rows
                if name in finished:
                    yield _Part(name, f, p, rows)
                else:
                    yield _Part(
                        name, f, p, rows, self._keys(table, source, offset), self._convert(table)
                    )
                offset += rows

    def _keys(self, table: pa.Table, source: InputFile, offset: int) -> pa.Array:
        if self.job.key is None:
            return pa.array(np.arange(offset, offset + table.num_rows, dtype=np.int64))
        if self.job.key not in table.column_names:
            raise BatchError(f"input file {source.path} has no key column '{self.job.key}'")
        return one_array(table.column(self.job.key))

    def _convert(self, table: pa.Table) -> Converted:
        return convert(table, self.io, self.column_for, self.reject_nan)

    # -- scoring -----------------------------------------------------------------------------

    async def score(self, converted: Converted) -> dict[str, np.ndarray]:
        return await score_rows(
            self.scorer, converted.inputs, int(converted.good.sum()), self.order,
            self.batch_size, self.calls,
        )  # fmt: skip

    async def finish(self, part: _Part, folder: Path, progress: Progress) -> None:
        assert part.converted is not None
        outputs = await self.score(part.converted)
        record = await asyncio.to_thread(self._write, part, outputs, folder)
        self.manifest.parts[part.name] = record
        async with self.saving:
            text = self.manifest.dumps()  # on the loop: no part changes it meanwhile
            await asyncio.to_thread(manifest_file.write_atomic, folder, text)
        progress.advance(part.rows)

    def _write(self, part: _Part, outputs: dict[str, np.ndarray], folder: Path) -> PartRecord:
        """The part's files (on a worker thread: building Arrow columns takes time too)."""
        assert part.converted is not None and part.keys is not None
        converted = part.converted
        good = pa.array(converted.good)
        table = writer.outputs_table(part.keys.filter(good), self.key_name, outputs, self.order)
        errors_file = None
        if converted.reasons:
            bad = part.keys.filter(pa.array(~converted.good))
            reasons = [converted.reasons[r] for r in sorted(converted.reasons)]
            errors_file = f"errors-{part.name[len('part-') :]}.parquet"
            errors = writer.errors_table(bad, self.key_name, reasons)
            writer.write_atomic(errors, folder / errors_file)
        outputs_file = f"{part.name}.parquet"
        writer.write_atomic(table, folder / outputs_file)
        return PartRecord(
            part.file,
            part.index,
            part.rows,
            table.num_rows,
            len(converted.reasons),
            outputs_file,
            errors_file,
        )


def _total_rows(files: list[InputFile]) -> int | None:
    """All rows, where the formats say so without reading the data."""
    total = 0
    for f in files:
        try:
            if f.format == "parquet":
                total += pq.ParquetFile(f.path).metadata.num_rows
            elif f.format == "npy":
                total += len(np.load(f.path, mmap_mode="r", allow_pickle=False))
            else:
                return None
        except Exception:
            return None
    return total


async def open_scorer(job: BatchJob) -> Scorer:
    if job.url:
        from inferd.server.batch.remote import RemoteScorer

        return await RemoteScorer.open(job.url, job.model, job.version, job.outputs)
    if job.repository is None:
        raise BatchError("give --model-repository (score here) or --url (score on a server)")
    return await LocalScorer.open(job.repository, job.model, job.version, job.outputs)


async def run_batch(job: BatchJob, *, progress_stream: TextIO | None = None) -> Summary:
    """Score ``job``; raises ``BatchError`` (its ``exit_code`` says which) when
    the run cannot go on."""
    if job.part_rows < 1 or job.batch_size < 0 or not 0 <= job.max_error_fraction <= 1:
        raise BatchError(
            "--part-rows must be >= 1, --batch-size >= 0 and --max-error-fraction within 0..1"
        )
    started = time.monotonic()
    files = [await asyncio.to_thread(describe, p) for p in expand(job.inputs)]
    scorer = await open_scorer(job)
    # pyarrow's first conversion imports pandas where it is installed (about
    # half a second): start-up, like loading the model, not scoring.
    pa.array([0])
    scoring_started, scoring_cpu = time.monotonic(), time.process_time()
    busy_before = scorer.engine_busy_s()
    try:
        run = _Run(job, scorer, files)
        folder = job.output
        folder.mkdir(parents=True, exist_ok=True)
        writer.clean(folder)
        manifest = run.manifest = resume(folder, run.manifest)
        finished = set(manifest.parts)
        progress = Progress(_total_rows(files), stream=progress_stream)
        prefetch = Prefetch(run.parts(finished))
        pending: list[asyncio.Task[None]] = []
        skipped = 0
        try:
            async for part in prefetch:
                if part.converted is None:
                    skipped += 1
                    progress.skip(part.rows)
                    continue
                while len(pending) >= PARTS_IN_FLIGHT:
                    await pending.pop(0)
                pending.append(asyncio.create_task(run.finish(part, folder, progress)))
            for task in pending:
                await task
        finally:
            for task in pending:
                task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.gather(*pending, return_exceptions=True)
            prefetch.close()
            progress.close()
        manifest.finished = now_iso()
        await asyncio.to_thread(manifest.save, folder)
    finally:
        await scorer.close()
    now = time.monotonic()
    busy_after = scorer.engine_busy_s()
    return summarize(
        manifest,
        folder,
        job.max_error_fraction,
        skipped=skipped,
        elapsed_s=now - started,
        scoring_s=now - scoring_started,
        scoring_cpu_s=time.process_time() - scoring_cpu,
        scored_now=progress.done - progress.skipped,
        engine_busy_s=None if busy_after is None else busy_after - (busy_before or 0.0),
    )
