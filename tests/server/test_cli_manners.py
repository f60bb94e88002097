"""The ``inferd`` command's manners: --version, every subcommand in --help,
one error line for a busy port, paths shown as given, and progress lines
while the demo repository builds and while models warm up."""

from __future__ import annotations

import logging
import os
import re
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import ServerThread

import inferd
from inferd.server import demo_models
from inferd.server.cli import COMMANDS, main
from inferd.server.version_loader import size_ranges

ROOT = Path(__file__).resolve().parents[2]


def _inferd(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INFERD_", "OTEL_"))}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "inferd", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env=env,
    )


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"inferd {inferd.__version__}\n"


def test_help_lists_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    (choices,) = re.findall(r"\{([a-z,-]+)\}", text.split("\n\n")[0])
    assert sorted(choices.split(",")) == sorted(COMMANDS)
    for name, help_ in COMMANDS.items():
        assert re.search(rf"^\s+{re.escape(name)}\s+{re.escape(help_[:20])}", text, re.M), name


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_subcommand_answers_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    try:
        status = main([name, "--help"])
    except SystemExit as exit_:
        status = exit_.code
    assert status in (0, None)
    assert f"inferd {name}" in capsys.readouterr().out


def test_a_busy_port_is_one_error_line(demo_repository: Path, tmp_path: Path) -> None:
    """No health, drain or 'grace period over' lines about a server that never served."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = _inferd(
            "serve",
            "--grpc-port",
            str(port),
            "--model-repository",
            str(demo_repository),
            cwd=tmp_path,
        )
    assert done.returncode == 2
    assert done.stderr == f"error: cannot listen on 127.0.0.1:{port}: address already in use\n"


def test_a_missing_repository_is_named_as_given(tmp_path: Path) -> None:
    (tmp_path / "here").mkdir()
    done = _inferd("serve", "--model-repository", "../elsewhere/models", cwd=tmp_path / "here")
    assert done.returncode == 2
    assert done.stderr == "error: model repository '../elsewhere/models' is not a directory\n"


def test_the_demo_build_logs_a_line_per_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(demo_models, "DIGITS_MAX_ITER", 1)  # the lines, not the accuracy
    caplog.set_level(logging.INFO, logger="inferd.demo_models")
    demo_models.build_demo_repository(tmp_path / "repo")
    lines = [r.getMessage() for r in caplog.records if r.name == "inferd.demo_models"]
    assert lines[0] == f"building the demo model repository at {tmp_path / 'repo'}"
    assert len(lines) == 1 + len(demo_models.MODEL_NAMES)
    for line, name in zip(lines[1:], demo_models.MODEL_NAMES, strict=True):
        assert re.fullmatch(rf"demo model '{name}' built in \d+\.\d\d s", line), line


def test_the_digits_training_runs_on_one_blas_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """Waiting BLAS threads spin: on a busy machine they made the demo build
    several times slower (docs/experiments/demo-build-time.md)."""
    from sklearn.neural_network import MLPClassifier
    from threadpoolctl import threadpool_info

    seen: list[int] = []
    real_fit = MLPClassifier.fit

    def fit(self: MLPClassifier, *args: object, **kwargs: object) -> MLPClassifier:
        seen.extend(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")
        return real_fit(self, *args, **kwargs)

    monkeypatch.setattr(MLPClassifier, "fit", fit)
    monkeypatch.setattr(demo_models, "DIGITS_MAX_ITER", 1)
    demo_models.train_digits()
    assert seen and set(seen) == {1}


def test_warmup_logs_sizes_and_seconds_per_model(
    demo_repository: Path,
    make_server: Callable[..., ServerThread],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="inferd.models")
    make_server(demo_repository)
    warmed = {r.model: r for r in caplog.records if getattr(r, "event", "") == "model_warmed_up"}
    assert sorted(warmed) == sorted(demo_models.MODEL_NAMES)
    digits = warmed["digits_mlp"]
    assert digits.batch_sizes == "1-64"
    assert digits.seconds > 0
    assert re.fullmatch(
        r"model 'digits_mlp' version 1 warmed up: batch sizes 1-64 in \d+\.\d\d s",
        digits.getMessage(),
    )


@pytest.mark.parametrize(
    ("sizes", "text"),
    [((1,), "1"), ((1, 2, 3, 4), "1-4"), ((1, 2, 4, 8, 9, 10, 64), "1-2, 4, 8-10, 64")],
)
def test_size_ranges(sizes: tuple[int, ...], text: str) -> None:
    assert size_ranges(sizes) == text
