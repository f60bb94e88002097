"""The generated demo model repository: layout, configs, cards, models, atomicity."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format

from inferd.engines.base import BYTES_DTYPE, EngineOptions
from inferd.engines.onnx import OnnxEngine
from inferd.protos import model_config_pb2 as mc
from inferd.protos.datatypes import CONFIG_TO_V2, NUMPY_DTYPES
from inferd.server import demo_models
from inferd.server.demo_models import (
    GENERATOR_VERSION,
    MARKER,
    MODEL_NAMES,
    build_demo_repository,
    is_complete,
)

# name -> (max_batch_size, inputs, outputs); tensors as (name, TYPE_*, dims without batch)
EXPECTED = {
    "digits_mlp": (
        64,
        [("pixels", "TYPE_FP32", [64])],
        [("probabilities", "TYPE_FP32", [10]), ("label", "TYPE_INT64", [1])],
    ),
    "text_stats": (
        32,
        [
            ("token_ids", "TYPE_INT64", [8]),
            ("weights", "TYPE_FP16", [8]),
            ("tag", "TYPE_STRING", [1]),
        ],
        [
            ("id_sum", "TYPE_INT64", [1]),
            ("weighted", "TYPE_FP16", [8]),
            ("tag_echo", "TYPE_STRING", [1]),
        ],
    ),
    "dense_reference": (
        32,
        [("x", "TYPE_FP32", [1024])],
        [("y", "TYPE_FP32", [256])],
    ),
}
CARD_KEYS = {"owner", "description", "intended_use", "data_version", "training_commit", "metrics"}


def _config(repo: Path, name: str) -> mc.ModelConfig:
    return text_format.Parse((repo / name / "config.pbtxt").read_text(), mc.ModelConfig())


def _engine(repo: Path, name: str) -> OnnxEngine:
    return OnnxEngine(repo / name / "1" / "model.onnx", EngineOptions(intra_op_threads=1))


def _fake_build(root: Path) -> None:
    """Stand-in for the real (seconds-long) build: the same files, empty."""
    for name in MODEL_NAMES:
        (root / name / "1").mkdir(parents=True)
        for f in ("config.pbtxt", "model_card.json", "1/model.onnx"):
            (root / name / f).write_text("")
    (root / MARKER).write_text(json.dumps({"generator_version": GENERATOR_VERSION}))


# --------------------------------------------------------------------------- real build


def test_layout(demo_repository: Path) -> None:
    assert sorted(p.name for p in demo_repository.iterdir()) == sorted([*MODEL_NAMES, MARKER])
    for name in MODEL_NAMES:
        files = sorted(
            str(p.relative_to(demo_repository / name))
            for p in (demo_repository / name).rglob("*")
            if p.is_file()
        )
        assert files == ["1/model.onnx", "config.pbtxt", "model_card.json"]
    assert is_complete(demo_repository)
    # No temp or old siblings left behind.
    assert [p.name for p in demo_repository.parent.iterdir()] == [demo_repository.name]


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_config_parses_and_matches_the_model(demo_repository: Path, name: str) -> None:
    config = _config(demo_repository, name)
    max_batch, inputs, outputs = EXPECTED[name]
    assert config.name == name
    assert config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == max_batch
    assert config.HasField("dynamic_batching")
    assert config.dynamic_batching.max_queue_delay_microseconds > 0
    assert [(g.count, g.kind) for g in config.instance_group] == [
        (1, mc.ModelInstanceGroup.KIND_CPU)
    ]
    assert config.parameters["intra_op_thread_count"].string_value == "1"
    got_in = [(t.name, mc.DataType.Name(t.data_type), list(t.dims)) for t in config.input]
    got_out = [(t.name, mc.DataType.Name(t.data_type), list(t.dims)) for t in config.output]
    assert got_in == inputs
    assert got_out == outputs

    # The ONNX graph agrees with the config: batch dim dynamic, rest identical.
    sig = _engine(demo_repository, name).signature
    from_config = [
        (t.name, (-1, *t.dims), NUMPY_DTYPES[CONFIG_TO_V2[mc.DataType.Name(t.data_type)]])
        for t in config.input
    ] + [
        (t.name, (-1, *t.dims), NUMPY_DTYPES[CONFIG_TO_V2[mc.DataType.Name(t.data_type)]])
        for t in config.output
    ]
    from_model = [(s.name, s.shape, s.dtype) for s in [*sig.inputs, *sig.outputs]]
    assert from_config == from_model


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_model_card(demo_repository: Path, name: str) -> None:
    card = json.loads((demo_repository / name / "model_card.json").read_text())
    assert set(card) == CARD_KEYS
    for key in CARD_KEYS - {"metrics"}:
        assert isinstance(card[key], str) and card[key]
    assert re.fullmatch(r"[0-9a-f]{40}|unknown", card["training_commit"])
    assert card["metrics"]
    assert all(isinstance(v, (int, float)) for v in card["metrics"].values())


def test_digits_matches_sklearn_and_is_accurate(demo_repository: Path) -> None:
    training = demo_models.train_digits()
    out = _engine(demo_repository, "digits_mlp").infer({"pixels": training.x_test})
    expected = training.classifier.predict_proba(training.x_test / np.float32(16))
    np.testing.assert_allclose(out["probabilities"], expected, rtol=0, atol=1e-5)
    assert out["label"].shape == (len(training.y_test), 1)
    np.testing.assert_array_equal(
        out["label"][:, 0], training.classifier.predict(training.x_test / np.float32(16))
    )
    accuracy = float(np.mean(out["label"][:, 0] == training.y_test))
    assert accuracy > 0.9
    card = json.loads((demo_repository / "digits_mlp" / "model_card.json").read_text())
    assert card["metrics"]["accuracy"] == pytest.approx(accuracy, abs=1e-6)
    # Deterministic: retraining gives the very same file.
    rebuilt = demo_models.digits_model(training).SerializeToString()
    assert (demo_repository / "digits_mlp" / "1" / "model.onnx").read_bytes() == rebuilt


def test_text_stats_computes(demo_repository: Path) -> None:
    ids = np.arange(16, dtype=np.int64).reshape(2, 8)
    weights = np.full((2, 8), 0.5, np.float16)
    tag = np.array([[b"caf\xc3\xa9"], [b""]], dtype=BYTES_DTYPE)
    out = _engine(demo_repository, "text_stats").infer(
        {"token_ids": ids, "weights": weights, "tag": tag}
    )
    np.testing.assert_array_equal(out["id_sum"], [[28], [92]])
    assert out["weighted"].dtype == np.float16
    np.testing.assert_array_equal(out["weighted"], ids.astype(np.float16) * weights)
    assert out["tag_echo"].tolist() == [[b"caf\xc3\xa9"], [b""]]


def test_dense_reference_is_deterministic_and_sane(demo_repository: Path) -> None:
    x = np.random.default_rng(0).standard_normal((32, 1024), dtype=np.float32)
    y = _engine(demo_repository, "dense_reference").infer({"x": x})["y"]
    assert y.shape == (32, 256)
    assert np.all(np.isfinite(y))
    assert 0.1 < float(y.std()) < 10  # He scaling keeps activations O(1)
    rebuilt = demo_models.dense_reference_model().SerializeToString()
    assert (demo_repository / "dense_reference" / "1" / "model.onnx").read_bytes() == rebuilt


def test_rebuild_is_skipped_when_complete(demo_repository: Path) -> None:
    model = demo_repository / "digits_mlp" / "1" / "model.onnx"
    before = model.stat()
    assert build_demo_repository(demo_repository) == demo_repository
    after = model.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


# --------------------------------------------------------------------------- install logic


@pytest.fixture
def fake_build(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    calls: list[Path] = []

    def build(root: Path) -> None:
        calls.append(root)
        _fake_build(root)

    monkeypatch.setattr(demo_models, "_build_into", build)
    return calls


def test_force_rebuilds(tmp_path: Path, fake_build: list[Path]) -> None:
    dest = tmp_path / "repo"
    build_demo_repository(dest)
    inode = (dest / MARKER).stat().st_ino
    build_demo_repository(dest)
    assert len(fake_build) == 1
    build_demo_repository(dest, force=True)
    assert len(fake_build) == 2
    assert (dest / MARKER).stat().st_ino != inode
    assert is_complete(dest)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo"]


def test_stale_version_is_rebuilt(tmp_path: Path, fake_build: list[Path]) -> None:
    dest = tmp_path / "repo"
    build_demo_repository(dest)
    (dest / MARKER).write_text(json.dumps({"generator_version": GENERATOR_VERSION - 1}))
    (dest / "leftover").write_text("from the old generator")
    assert not is_complete(dest)
    build_demo_repository(dest)
    assert len(fake_build) == 2
    assert is_complete(dest)
    assert not (dest / "leftover").exists()


def test_missing_file_counts_as_incomplete(tmp_path: Path, fake_build: list[Path]) -> None:
    dest = tmp_path / "repo"
    build_demo_repository(dest)
    (dest / "text_stats" / "1" / "model.onnx").unlink()
    assert not is_complete(dest)
    build_demo_repository(dest)
    assert len(fake_build) == 2 and is_complete(dest)


def test_foreign_directory_is_never_overwritten(tmp_path: Path, fake_build: list[Path]) -> None:
    dest = tmp_path / "mine"
    dest.mkdir()
    (dest / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a demo model repository"):
        build_demo_repository(dest, force=True)
    assert (dest / "precious.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def test_empty_directory_is_filled(tmp_path: Path, fake_build: list[Path]) -> None:
    dest = tmp_path / "empty"
    dest.mkdir()
    build_demo_repository(dest)
    assert is_complete(dest)


def test_failed_build_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def half_build(root: Path) -> None:
        (root / "digits_mlp").mkdir()
        raise RuntimeError("crash mid-build")

    monkeypatch.setattr(demo_models, "_build_into", half_build)
    with pytest.raises(RuntimeError, match="crash mid-build"):
        build_demo_repository(tmp_path / "repo")
    assert list(tmp_path.iterdir()) == []


def test_concurrent_builders_agree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Every builder finishes its temp copy before any installs, so all but one
    # hit an occupied destination.
    n = 4
    ready = threading.Barrier(n)

    def slow_build(root: Path) -> None:
        _fake_build(root)
        ready.wait()

    monkeypatch.setattr(demo_models, "_build_into", slow_build)
    dest = tmp_path / "repo"
    errors: list[BaseException] = []

    def run() -> None:
        try:
            build_demo_repository(dest)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert is_complete(dest)
    assert [p.name for p in tmp_path.iterdir()] == ["repo"]


def test_cli(tmp_path: Path, fake_build: list[Path], capsys: pytest.CaptureFixture[str]) -> None:
    dest = tmp_path / "cli"
    assert demo_models.main([str(dest)]) == 0
    assert str(dest) in capsys.readouterr().out
    assert demo_models.main([str(dest), "--force"]) == 0
    assert len(fake_build) == 2 and is_complete(dest)


def test_late_builder_keeps_the_winners_repository(
    tmp_path: Path, fake_build: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = tmp_path / "repo"
    build_demo_repository(dest)
    winner = (dest / MARKER).stat().st_ino
    # A builder whose up-front check ran before the winner installed.
    real = demo_models.is_complete
    calls: list[Path] = []

    def first_check_misses(d: Path) -> bool:
        calls.append(d)
        return len(calls) > 1 and real(d)

    monkeypatch.setattr(demo_models, "is_complete", first_check_misses)
    build_demo_repository(dest)
    assert len(fake_build) == 2
    assert (dest / MARKER).stat().st_ino == winner
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo"]


@pytest.mark.parametrize("command", [["demo-models", "{dest}"], ["serve", "--grpc-port", "0"]])
def test_without_the_demo_extra_the_cli_says_what_to_install(
    tmp_path: Path, command: list[str]
) -> None:
    """onnx and scikit-learn are the optional `demo` extra: without them the
    CLI names the extra instead of failing with a traceback."""
    import subprocess
    import sys

    script = (
        "import sys; sys.modules['onnx'] = None; sys.modules['sklearn'] = None\n"
        "from inferd.server.cli import main\n"
        f"raise SystemExit(main({[c.format(dest=tmp_path / 'm') for c in command]!r}))\n"
    )
    env = {**__import__("os").environ, "INFERD_DEMO_REPOSITORY": str(tmp_path / "cache")}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 2, done.stderr
    assert "pip install 'inferd[demo]'" in done.stderr
    assert "onnx is not installed" in done.stderr
    assert "Traceback" not in done.stderr
