"""Rows that do not fit the signature go to errors parts with their key and
reason; the rest are scored as if the bad rows were not there."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from inferd.server.batch import BatchJob, run_batch
from inferd.server.batch.errors import EXIT_OK, EXIT_TOO_MANY_ERRORS
from tests.batch.batch_data import digits_rows, write_parquet

REJECT_NAN = 'parameters { key: "reject_nan" value { string_value: "pixels" } }\n'


def score(repo: Path, source: Path, out: Path, fraction: float = 0.0, **kw: object) -> int:
    job = BatchJob(
        "digits_mlp", [str(source)], out, repository=repo, key="id",
        max_error_fraction=fraction, part_rows=16, **kw,  # type: ignore[arg-type]
    )  # fmt: skip
    return asyncio.run(run_batch(job)).exit_code


def errors_of(out: Path) -> dict[str, str]:
    files = sorted(out.glob("errors-*.parquet"))
    if not files:
        return {}
    table = pq.read_table(files)
    assert table.column_names == ["id", "reason"]
    return dict(
        zip(table.column("id").to_pylist(), table.column("reason").to_pylist(), strict=True)
    )


@pytest.fixture(scope="module")
def nan_repository(demo_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """digits_mlp whose config refuses NaN in ``pixels``."""
    repo = tmp_path_factory.mktemp("nan") / "models"
    shutil.copytree(demo_repository / "digits_mlp", repo / "digits_mlp")
    config = repo / "digits_mlp" / "config.pbtxt"
    config.write_text(config.read_text() + REJECT_NAN)
    return repo


def test_bad_list_rows_are_set_aside_with_reasons(nan_repository: Path, tmp_path: Path) -> None:
    keys, pixels = digits_rows(40)
    rows: list[list[float] | None] = [r.tolist() for r in pixels]
    rows[3] = None  # missing
    rows[7] = rows[7][:63]  # too short
    rows[8] = [*rows[8], 1.0]  # too long
    rows[20][5] = float("nan")
    pq.write_table(pa.table({"id": keys, "pixels": pa.array(rows, pa.list_(pa.float32()))}),
                   tmp_path / "in.parquet")  # fmt: skip
    code = score(nan_repository, tmp_path / "in.parquet", tmp_path / "out")
    assert code == EXIT_TOO_MANY_ERRORS
    errors = errors_of(tmp_path / "out")
    assert sorted(errors) == [keys[i] for i in (3, 7, 8, 20)]
    assert "missing value" in errors[keys[3]]
    assert "63 values, the input takes 64" in errors[keys[7]]
    assert "65 values" in errors[keys[8]]
    assert "NaN is not allowed" in errors[keys[20]]

    # The good rows score exactly as they do without the bad ones around them.
    good = [i for i in range(40) if i not in (3, 7, 8, 20)]
    write_parquet(tmp_path / "good.parquet", keys[good], pixels[good])
    assert score(nan_repository, tmp_path / "good.parquet", tmp_path / "clean") == EXIT_OK
    scored = pq.read_table(sorted((tmp_path / "out").glob("part-*.parquet")))
    clean = pq.read_table(sorted((tmp_path / "clean").glob("part-*.parquet")))
    assert scored.equals(clean)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["totals"] == {"rows": 40, "scored": 36, "errors": 4, "parts": 3}


def test_nan_passes_where_the_model_allows_it(demo_repository: Path, tmp_path: Path) -> None:
    keys, pixels = digits_rows(4)
    pixels[1, 0] = np.nan
    write_parquet(tmp_path / "in.parquet", keys, pixels)
    assert score(demo_repository, tmp_path / "in.parquet", tmp_path / "out") == EXIT_OK
    assert errors_of(tmp_path / "out") == {}


def test_wrong_types_in_json_lines_and_csv(demo_repository: Path, tmp_path: Path) -> None:
    keys, pixels = digits_rows(6)
    lines = [{"id": str(k), "pixels": p.tolist()} for k, p in zip(keys, pixels, strict=True)]
    lines[1]["pixels"] = "not pixels"
    lines[2]["pixels"][0] = "x"
    del lines[4]["pixels"]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert score(demo_repository, source, tmp_path / "out") == EXIT_TOO_MANY_ERRORS
    errors = errors_of(tmp_path / "out")
    assert sorted(errors) == [keys[1], keys[2], keys[4]]
    assert "is not a number" in errors[keys[1]]
    assert "wrong type" in errors[keys[2]]
    assert "missing value" in errors[keys[4]]

    # CSV: text where the pixels' JSON array belongs, and an empty cell.
    good = json.dumps(pixels[0].tolist())
    csv = tmp_path / "in.csv"
    csv.write_text(f'id,pixels\na,"{good}"\nb,abc\nc,\nd,"{good}"\n')
    assert score(demo_repository, csv, tmp_path / "csv-out", 0.5) == EXIT_OK
    errors = errors_of(tmp_path / "csv-out")
    assert sorted(errors) == ["b", "c"]
    assert "'abc' is not a number" in errors["b"] and "missing value" in errors["c"]


def test_error_fraction_within_the_limit_exits_zero(demo_repository: Path, tmp_path: Path) -> None:
    keys, pixels = digits_rows(10)
    rows: list[list[float] | None] = [r.tolist() for r in pixels]
    rows[0] = None
    pq.write_table(pa.table({"id": keys, "pixels": pa.array(rows, pa.list_(pa.float32()))}),
                   tmp_path / "in.parquet")  # fmt: skip
    assert score(demo_repository, tmp_path / "in.parquet", tmp_path / "a", 0.1) == EXIT_OK
    assert score(demo_repository, tmp_path / "in.parquet", tmp_path / "b", 0.09) == (
        EXIT_TOO_MANY_ERRORS
    )


def test_fractional_values_are_refused_by_integer_inputs(
    demo_repository: Path, tmp_path: Path
) -> None:
    ids = [[1.0] * 8, [1.5] * 8, [2.0] * 8]
    table = pa.table({"key": [0, 1, 2], "token_ids": ids, "weights": [[0.5] * 8] * 3,
                      "tag": ["a", "b", "c"]})  # fmt: skip
    pq.write_table(table, tmp_path / "in.parquet")
    job = BatchJob("text_stats", [str(tmp_path / "in.parquet")], tmp_path / "out",
                   repository=demo_repository, key="key", max_error_fraction=0.5)  # fmt: skip
    assert asyncio.run(run_batch(job)).exit_code == EXIT_OK
    errors = pq.read_table(sorted((tmp_path / "out").glob("errors-*.parquet")))
    assert errors.column("key").to_pylist() == [1]
    assert "not a whole number" in errors.column("reason")[0].as_py()
    out = pq.read_table(sorted((tmp_path / "out").glob("part-*.parquet")))
    assert out.column("id_sum").to_pylist() == [8, 16]
