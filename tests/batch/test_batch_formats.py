"""Every input format in, Parquet parts and a manifest out, on the real demo models."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from inferd.server.batch import BatchError, BatchJob, run_batch
from inferd.server.batch.errors import EXIT_INPUT, InputFileError
from tests.batch.batch_data import digits_rows, write_csv, write_jsonl, write_parquet


def run(job: BatchJob) -> dict[str, object]:
    return asyncio.run(run_batch(job)).to_json()


def outputs(folder: Path) -> pa.Table:
    return pq.read_table(sorted(folder.glob("part-*.parquet")))


def digits_job(repo: Path, inputs: list[str], out: Path, **options: object) -> BatchJob:
    return BatchJob("digits_mlp", inputs, out, repository=repo, key="id", **options)  # type: ignore[arg-type]


def test_parquet_in_parquet_out_with_manifest(demo_repository: Path, tmp_path: Path) -> None:
    keys, pixels = digits_rows(300)
    source = write_parquet(tmp_path / "in.parquet", keys, pixels)
    summary = run(digits_job(demo_repository, [str(source)], tmp_path / "out", part_rows=128))
    assert summary["exit_code"] == 0
    table = outputs(tmp_path / "out")
    assert table.column_names == ["id", "probabilities", "label"]
    assert table.column("id").to_pylist() == keys.tolist()
    probs = np.stack(table.column("probabilities").to_numpy(zero_copy_only=False))
    assert probs.shape == (300, 10) and probs.dtype == np.float32
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-4)
    assert (table.column("label").to_numpy() == probs.argmax(axis=1)).all()
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["complete"] and manifest["totals"] == {
        "rows": 300,
        "scored": 300,
        "errors": 0,
        "parts": 3,
    }
    assert manifest["model"]["name"] == "digits_mlp" and manifest["model"]["version"] == "1"
    card = manifest["model"]["card"]
    assert card["training_commit"] and card["data_version"]
    entry = manifest["inputs"][0]
    assert entry["size_bytes"] == source.stat().st_size
    assert entry["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert manifest["inferd_version"] and manifest["started"] <= manifest["finished"]
    # Floats are written plainly (their values rarely repeat); keys and labels
    # with a dictionary.
    chunk = pq.ParquetFile(tmp_path / "out" / "part-00000-000000.parquet").metadata.row_group(0)
    encodings = {chunk.column(i).path_in_schema: chunk.column(i).encodings for i in range(3)}
    assert "RLE_DICTIONARY" not in encodings["probabilities.list.element"]
    assert "RLE_DICTIONARY" in encodings["label"] and "RLE_DICTIONARY" in encodings["id"]


def test_every_format_gives_the_same_predictions(demo_repository: Path, tmp_path: Path) -> None:
    keys, pixels = digits_rows(150)
    parquet = write_parquet(tmp_path / "in.parquet", keys, pixels)
    jsonl = write_jsonl(tmp_path / "in.jsonl", keys, pixels)
    csv = write_csv(tmp_path / "in.csv", keys, pixels)
    npz = tmp_path / "in.npz"
    np.savez(npz, id=keys, pixels=pixels)
    npy = tmp_path / "in.npy"
    np.save(npy, pixels)
    expected = None
    for source in (parquet, jsonl, csv, npz):
        out = tmp_path / f"out-{source.suffix[1:]}"
        assert run(digits_job(demo_repository, [str(source)], out))["exit_code"] == 0
        table = outputs(out)
        assert table.column("id").to_pylist() == keys.tolist(), source.suffix
        if expected is None:
            expected = table.drop_columns(["id"])
        assert table.drop_columns(["id"]).equals(expected), source.suffix
    # .npy has no key column: rows are numbered, and it feeds the model's only input.
    job = BatchJob("digits_mlp", [str(npy)], tmp_path / "out-npy", repository=demo_repository)
    assert run(job)["exit_code"] == 0
    table = outputs(tmp_path / "out-npy")
    assert table.column("row").to_pylist() == list(range(150))
    assert table.drop_columns(["row"]).equals(expected)


def test_globs_and_several_files_in_order(demo_repository: Path, tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    all_keys = []
    for i in range(3):
        keys, pixels = digits_rows(40, seed=i)
        write_parquet(tmp_path / "in" / f"f{i}.parquet", keys, pixels)
        all_keys.extend(keys.tolist())
    extra_keys, extra = digits_rows(10, seed=9)
    write_jsonl(tmp_path / "extra.jsonl", extra_keys, extra)
    job = digits_job(
        demo_repository,
        [str(tmp_path / "in" / "*.parquet"), str(tmp_path / "extra.jsonl")],
        tmp_path / "out",
        part_rows=32,
    )
    summary = run(job)
    assert summary["totals"] == {"rows": 130, "scored": 130, "errors": 0, "parts": 7}
    assert outputs(tmp_path / "out").column("id").to_pylist() == all_keys + extra_keys.tolist()


def test_column_map_outputs_and_several_dtypes(demo_repository: Path, tmp_path: Path) -> None:
    """text_stats: INT64 and FP16 list columns and a text column, renamed with the map."""
    rows = 50
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 1000, size=(rows, 8))
    weights = rng.uniform(0, 1, size=(rows, 8)).astype(np.float32)
    table = pa.table(
        {
            "key": np.arange(rows) * 10,
            "ids": [r.tolist() for r in ids],
            "w": [r.tolist() for r in weights],
            "tag": [f"tag-{i}" for i in range(rows)],
        }
    )
    pq.write_table(table, tmp_path / "in.parquet")
    job = BatchJob(
        "text_stats",
        [str(tmp_path / "in.parquet")],
        tmp_path / "out",
        repository=demo_repository,
        key="key",
        column_map={"ids": "token_ids", "w": "weights"},
        outputs=["tag_echo", "id_sum"],
    )
    assert run(job)["exit_code"] == 0
    out = outputs(tmp_path / "out")
    assert out.column_names == ["key", "tag_echo", "id_sum"]
    assert out.column("id_sum").to_pylist() == ids.sum(axis=1).tolist()
    assert out.column("tag_echo").to_pylist() == [f"tag-{i}".encode() for i in range(rows)]


def test_unreadable_input_is_named_in_one_line(demo_repository: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet at all")
    with pytest.raises(InputFileError) as caught:
        run(digits_job(demo_repository, [str(broken)], tmp_path / "out"))
    assert caught.value.exit_code == EXIT_INPUT
    message = str(caught.value)
    assert str(broken) in message and "\n" not in message
    with pytest.raises(InputFileError, match=r"missing\.parquet"):
        run(digits_job(demo_repository, [str(tmp_path / "missing.parquet")], tmp_path / "o2"))
    with pytest.raises(InputFileError, match="no input file matches"):
        run(digits_job(demo_repository, [str(tmp_path / "none-*.parquet")], tmp_path / "o3"))


def test_bad_job_settings_are_refused(demo_repository: Path, tmp_path: Path) -> None:
    keys, pixels = digits_rows(5)
    source = str(write_parquet(tmp_path / "in.parquet", keys, pixels))
    with pytest.raises(BatchError, match="no output 'nope'"):
        run(digits_job(demo_repository, [source], tmp_path / "o1", outputs=["nope"]))
    with pytest.raises(BatchError, match="not an input"):
        run(digits_job(demo_repository, [source], tmp_path / "o2", column_map={"a": "b"}))
    with pytest.raises(BatchError, match="no key column 'nokey'"):
        run(
            BatchJob(
                "digits_mlp", [source], tmp_path / "o3", repository=demo_repository, key="nokey"
            )
        )
    with pytest.raises(BatchError, match="not in the repository"):
        run(BatchJob("nomodel", [source], tmp_path / "o4", repository=demo_repository))
    with pytest.raises(BatchError, match="unknown format"):
        run(digits_job(demo_repository, [str(tmp_path / "x.txt")], tmp_path / "o5"))
