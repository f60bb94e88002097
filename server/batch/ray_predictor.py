"""Ray Data past one machine: a predictor class that ``map_batches`` drives.

    import ray
    from inferd.server.batch.ray_predictor import InferdPredictor

    ds = ray.data.read_parquet("s3://bucket/features/")
    scored = ds.map_batches(
        InferdPredictor,
        fn_constructor_kwargs={"model_repository": "/models", "model": "digits_mlp",
                               "key": "id"},
        batch_format="pyarrow",
        batch_size=4096,
        concurrency=4,  # actors, each with the model loaded once
    )
    scored.write_parquet("s3://bucket/predictions/")

Each actor loads the model version as ``inferd serve`` does and scores
through the same data plane, scheduler and engine as ``inferd batch``, so
the answers are the same bytes. A batch comes back with the key column (if
``key``), every output, and ``error``: null for scored rows, the reason for
rows that do not fit the signature (their outputs are null). Needs the
``ray`` extra (``pip install 'inferd[ray]'``).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa

from inferd.server.batch.columns import convert, reject_nan_inputs
from inferd.server.batch.scoring import LocalScorer, score_rows
from inferd.server.batch.writer import output_column

T = TypeVar("T")

#: Output column with each row's reason for not being scored (null: scored).
ERROR_COLUMN = "error"


class InferdPredictor:
    def __init__(
        self,
        model_repository: str | Path,
        model: str,
        *,
        version: str = "",
        column_map: Mapping[str, str] | None = None,
        key: str | None = None,
        outputs: Sequence[str] = (),
        batch_size: int = 0,
    ) -> None:
        # The model lives on its own event loop thread; Ray calls __call__ from its own.
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="inferd-ray-predictor", daemon=True
        )
        self._thread.start()
        self.scorer = self._run(
            LocalScorer.open(Path(model_repository), model, version, tuple(outputs))
        )
        io = self.scorer.io
        self.order = list(outputs) or list(io.outputs)
        self.column_for = {inp: col for col, inp in (column_map or {}).items()}
        self.key = key
        self.batch_size = min(batch_size or self.scorer.batch_size, self.scorer.batch_size)
        self.reject_nan = reject_nan_inputs(self.scorer.parameters, io)
        self._calls = self._run(self._semaphore(self.scorer.concurrency))

    @staticmethod
    async def _semaphore(count: int) -> asyncio.Semaphore:
        return asyncio.Semaphore(count)  # made on the model's loop, where it is used

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def __call__(self, batch: pa.Table | Mapping[str, Any]) -> pa.Table:
        table = batch if isinstance(batch, pa.Table) else _to_table(batch)
        converted = convert(table, self.scorer.io, self.column_for, self.reject_nan)
        rows = int(converted.good.sum())
        outputs = self._run(
            score_rows(
                self.scorer, converted.inputs, rows, self.order, self.batch_size, self._calls
            )
        )
        # Row i of the batch takes row positions[i] of the outputs; set-aside rows take null.
        positions = np.cumsum(converted.good) - 1
        take = pa.array(positions, mask=~converted.good)
        columns: dict[str, pa.Array] = {}
        if self.key is not None:
            columns[self.key] = table.column(self.key)
        for name in self.order:
            columns[name] = output_column(outputs[name]).take(take)
        reasons = [converted.reasons.get(i) for i in range(table.num_rows)]
        columns[ERROR_COLUMN] = pa.array(reasons, pa.string())
        return pa.table(columns)

    def close(self) -> None:
        self._run(self.scorer.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __del__(self) -> None:
        if self._thread.is_alive() and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._loop.stop)


def _to_table(batch: Mapping[str, Any]) -> pa.Table:
    """A ``batch_format="numpy"`` batch (or a pandas DataFrame) as Arrow; a
    2-D or deeper array becomes a column of fixed-size lists."""
    if hasattr(batch, "to_dict") and hasattr(batch, "columns"):  # pandas
        return pa.Table.from_pandas(batch, preserve_index=False)
    columns: dict[str, pa.Array] = {}
    for name, values in batch.items():
        array = np.asarray(values)
        if array.ndim > 1 and array.dtype != object:
            flat = np.ascontiguousarray(array).reshape(len(array), -1)
            columns[name] = pa.FixedSizeListArray.from_arrays(
                pa.array(flat.reshape(-1)), flat.shape[1]
            )
        else:
            columns[name] = pa.array(list(array) if array.dtype == object else array)
    return pa.table(columns)
