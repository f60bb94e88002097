"""docs/your-model.md's scikit-learn path, run as written.

Every code block the guide marks ``<!-- guide-test: KIND -->`` runs in order in
an empty directory: ``python`` blocks in one namespace in this process,
``own-process`` blocks in a child process (tritonclient 2.41 cannot share a
process with our stubs), ``write PATH`` blocks written to PATH, and the
``serve`` block as a real ``python -m inferd`` server on port 0. The only
change to the guide's code is the address: its 127.0.0.1:8001 becomes the
port the server took. Then the answers are compared with scikit-learn's.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inferd.clients import InferenceClient

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "your-model.md"
GUIDE_ADDRESS = "127.0.0.1:8001"

_MARKED_BLOCK = re.compile(
    r"^<!-- guide-test: (?P<kind>[^>]+?) -->\n```[a-z]*\n(?P<code>.*?)^```$",
    re.MULTILINE | re.DOTALL,
)

#: The steps the guide must keep marked, in order: a marker lost in an edit
#: fails here instead of silently running less.
EXPECTED_STEPS = [
    "python",  # train and export
    "python",  # look at the graph
    "write models/iris/config.pbtxt",
    "serve",
    "python",  # our client
    "own-process",  # tritonclient
]


@dataclass(frozen=True)
class Step:
    kind: str
    code: str


def guide_steps() -> list[Step]:
    text = GUIDE.read_text(encoding="utf-8")
    return [Step(m["kind"], m["code"]) for m in _MARKED_BLOCK.finditer(text)]


def test_the_guide_marks_the_whole_path() -> None:
    assert [step.kind for step in guide_steps()] == EXPECTED_STEPS


class GuideServer:
    """The guide's ``inferd serve`` command, on port 0, in a child process."""

    def __init__(self, command: str, cwd: Path) -> None:
        args = shlex.split(command)
        assert args[:2] == ["inferd", "serve"], command
        self.log_path = cwd / "serve.log"
        self._log = self.log_path.open("wb")
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("INFERD_", "OTEL_")) and k != "PROMETHEUS_MULTIPROC_DIR"
        }
        # The checkout's inferd, wherever the test runs from.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "inferd", *args[1:], "--grpc-port", "0", "--log-format", "json"],
            cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=self._log,
        )  # fmt: skip
        try:
            self.address = f"127.0.0.1:{self._wait_for_port()}"
        except BaseException:
            self.stop()
            raise

    def _wait_for_port(self, timeout: float = 90) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.log_path.read_text(errors="replace").splitlines():
                if line.startswith("{") and '"listening"' in line:
                    return int(json.loads(line)["grpc_port"])
            assert self.proc.poll() is None, self.log_path.read_text()
            time.sleep(0.1)
        raise TimeoutError(f"the server never listened:\n{self.log_path.read_text()}")

    def wait_ready(self, model: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        with InferenceClient(self.address) as client:
            while time.monotonic() < deadline:
                assert self.proc.poll() is None, self.log_path.read_text()
                try:
                    if client.is_model_ready(model, timeout=1):
                        return
                    index = client.repository_index(timeout=1)
                except Exception:
                    index = []
                failed = [e["reason"] for e in index if e["name"] == model and e["reason"]]
                assert not failed, f"{model} did not load: {failed}"
                time.sleep(0.1)
        raise TimeoutError(f"{model} never became ready:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)
        self._log.close()


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def servers() -> Iterator[list[GuideServer]]:
    started: list[GuideServer] = []
    yield started
    for server in started:
        server.stop()


def test_the_sklearn_path_serves_what_sklearn_predicts(
    workdir: Path, servers: list[GuideServer]
) -> None:
    namespace: dict[str, Any] = {"__name__": "guide"}
    address = ""
    for step in guide_steps():
        code = step.code.replace(GUIDE_ADDRESS, address) if address else step.code
        if step.kind == "python":
            exec(compile(code, f"{GUIDE.name}:{step.kind}", "exec"), namespace)
        elif step.kind.startswith("write "):
            path = workdir / step.kind.removeprefix("write ")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(code)
        elif step.kind == "serve":
            server = GuideServer(code.strip(), workdir)
            servers.append(server)
            server.wait_ready("iris")
            address = server.address
        elif step.kind == "own-process":
            _run_tritonclient_block(code, workdir)
        else:
            pytest.fail(f"unknown guide step {step.kind!r}")

    # The client block's answer is scikit-learn's on the same rows.
    clf, rows, result = namespace["clf"], namespace["rows"], namespace["result"]
    assert result["label"].shape == (len(rows), 1)  # the config's dims, through reshape
    np.testing.assert_array_equal(result["label"][:, 0], clf.predict(rows))
    np.testing.assert_allclose(result["probabilities"], clf.predict_proba(rows), atol=1e-5)
    # tritonclient saw the same.
    np.testing.assert_array_equal(np.load(workdir / "triton_label.npy"), result["label"])
    np.testing.assert_allclose(
        np.load(workdir / "triton_probabilities.npy"), result["probabilities"], atol=1e-6
    )
    # And so does the whole data set, in batches the config allows.
    features = namespace["features"]
    with InferenceClient(address) as client:
        for start in range(0, len(features), 50):
            chunk = features[start : start + 50]
            answer = client.infer("iris", {"features": chunk}, timeout=10)
            np.testing.assert_array_equal(answer["label"][:, 0], clf.predict(chunk))
            np.testing.assert_allclose(answer["probabilities"], clf.predict_proba(chunk), atol=1e-5)


def _run_tritonclient_block(code: str, workdir: Path) -> None:
    """The guide's tritonclient block in a child process, then what it got saved
    for the comparison."""
    keep = (
        '\nnp.save("triton_label.npy", result.as_numpy("label"))'
        '\nnp.save("triton_probabilities.npy", result.as_numpy("probabilities"))\n'
    )
    done = subprocess.run(
        [sys.executable, "-c", code + keep],
        cwd=workdir, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_the_error_the_guide_quotes_is_the_servers(workdir: Path) -> None:
    """The guide shows the load error its config gives without ``reshape``;
    it must be what the server says."""
    from google.protobuf import text_format

    from inferd.engines.base import EngineOptions
    from inferd.engines.onnx import OnnxEngine
    from inferd.protos import model_config_pb2
    from inferd.server.repository import RepositoryError, complete_config

    steps = guide_steps()
    exec(compile(steps[0].code, f"{GUIDE.name}:export", "exec"), {"__name__": "guide"})
    config_text = next(s.code for s in steps if s.kind.startswith("write "))
    without = config_text.replace(" reshape: { shape: [ ] }", "")
    assert without != config_text
    config = text_format.Parse(without, model_config_pb2.ModelConfig())
    engine = OnnxEngine(workdir / "models/iris/1/model.onnx", EngineOptions())
    try:
        with pytest.raises(RepositoryError) as info:
            complete_config(config, engine.signature)
    finally:
        engine.close()
    quoted = re.search(
        r"Leave out the `reshape` and the load fails with `([^`]+)`", GUIDE.read_text()
    )
    assert quoted is not None
    assert " ".join(quoted[1].split()) in str(info.value)
