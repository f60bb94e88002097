"""Server-side commands on an install without their extra: one ``error:``
line naming the extra to install, exit 2, no traceback. ``client`` is a
plain ``pip install inferd`` (only the client's dependencies import);
``onnxruntime`` lacks only the ONNX runtime."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from lifecycle_models import plus, write_config

#: Run in a child: hide every module but the standard library and a plain
#: install's own dependencies (grpcio's typing_extensions among them).
BLOCK = textwrap.dedent(
    """
    import sys

    CLIENT = {"inferd", "grpc", "google", "numpy", "ml_dtypes", "typing_extensions"}


    class Missing:
        def __init__(self, blocked):
            self.blocked = blocked

        def find_spec(self, name, path=None, target=None):
            top = name.split(".")[0]
            if self.blocked == "client":
                hidden = top not in sys.stdlib_module_names and top not in CLIENT
            else:
                hidden = top == self.blocked
            if hidden:
                raise ModuleNotFoundError(f"No module named {top!r}", name=top)
            return None


    sys.meta_path.insert(0, Missing(sys.argv[1]))
    from inferd.server.cli import main

    raise SystemExit(main(sys.argv[2:]))
    """
)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    plus(tmp_path / "models" / "plus" / "1" / "model.onnx", 1)
    write_config(tmp_path / "models", "plus", "dynamic_batching { }")
    np.save(tmp_path / "x.npy", np.ones((3, 2), dtype=np.float32))
    return tmp_path


COMMANDS = {
    "batch": ["batch", "plus", "--model-repository", "models", "--input", "x.npy", "--output",
              "out"],
    "batch --url": ["batch", "plus", "--url", "127.0.0.1:1", "--input", "x.npy", "--output",
                    "out"],
    "monitor": ["monitor", "reference", "plus", "--model-repository", "models", "--input",
                "x.npy", "--output", "out"],
    "serve": ["serve", "--model-repository", "models", "--grpc-port", "0"],
}  # fmt: skip


@pytest.mark.parametrize(
    ("blocked", "command", "extra", "missing"),
    [
        ("client", "batch", "batch", "pyarrow"),
        ("onnxruntime", "batch", "batch", "onnxruntime"),
        ("client", "batch --url", "batch", "pyarrow"),
        ("client", "monitor", "server", "onnxruntime"),
        ("onnxruntime", "monitor", "server", "onnxruntime"),
        ("client", "serve", "server", "onnxruntime"),
    ],
)
def test_a_command_without_its_extra_names_it_in_one_line(
    workdir: Path, blocked: str, command: str, extra: str, missing: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", BLOCK, blocked, *COMMANDS[command]],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=workdir,
    )
    assert "Traceback" not in done.stderr
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f"error: inferd {command.split()[0]} needs the {extra} extra "
        f"(pip install 'inferd[{extra}]'): {missing} is not installed"
    ]
    assert not (workdir / "out").exists()
