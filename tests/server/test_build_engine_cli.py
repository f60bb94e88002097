"""``inferd build-engine`` argument handling, profile derivation from the
model and its config, calibration input checks and the progress display.

Everything up to TensorRT runs here for real (``--dry-run`` prints what
would be built). The build itself needs TensorRT and a GPU
(``tests/gpu/test_tensorrt_gpu.py``); without them the command must say so.
"""

from __future__ import annotations

import importlib.util
import io
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from inferd.engines.tensorrt.build_spec import BuildError, ModelInput, input_profiles
from inferd.engines.tensorrt.calibration import CalibrationSet
from inferd.engines.tensorrt.profiles import BatchProfile
from inferd.server import cli
from inferd.server.build_engine import ProgressDisplay, _ranges, main
from inferd.server.demo_models import dense_reference_model

HAVE_TENSORRT = importlib.util.find_spec("tensorrt") is not None


@pytest.fixture
def model(tmp_path: Path) -> Path:
    path = tmp_path / "dense.onnx"
    onnx.save(dense_reference_model((16, 32, 8)), path)
    return path


@pytest.fixture
def seq_model(tmp_path: Path) -> Path:
    """ids INT32 [batch, tokens] -> same, plus a fixed-shape input."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["ids"], ["out"])],
        "seq",
        [
            helper.make_tensor_value_info("ids", TensorProto.INT32, ["batch", "tokens"]),
            helper.make_tensor_value_info("bias", TensorProto.FLOAT, [4]),
        ],
        [helper.make_tensor_value_info("out", TensorProto.INT32, ["batch", "tokens"])],
    )
    path = tmp_path / "seq.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_dry_run_prints_profiles_and_dispatch_sizes(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_plan = tmp_path / "model.plan"
    code, out, err = run([str(model), "-o", str(out_plan), "--dry-run", "--contexts", "2"], capsys)
    assert (code, err) == (0, "")
    assert "input x: float32 [-1, 16]" in out
    assert "4 profile(s) per context x 2 context(s) = 8 in the plan" in out
    assert "[0] min / opt / max: x 1x16 / 2x16 / 2x16" in out
    assert "[3] min / opt / max: x 17x16 / 64x16 / 64x16" in out
    assert "batch sizes the server will dispatch: 1..64" in out
    assert not out_plan.exists()


def test_sizes_from_the_model_config(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.pbtxt"
    config.write_text(
        "max_batch_size: 32 dynamic_batching { preferred_batch_size: [4, 16] } "
        "instance_group [ { count: 2 kind: KIND_GPU }, { kind: KIND_GPU } ]"
    )
    code, out, _ = run(
        [str(model), "-o", str(tmp_path / "p.plan"), "--config", str(config), "--dry-run"], capsys
    )
    assert code == 0
    assert "3 profile(s) per context x 3 context(s)" in out  # the config's 3 instances
    assert "x 1x16 / 4x16 / 4x16" in out and "x 17x16 / 32x16 / 32x16" in out
    assert "dispatch: 1..32" in out


def test_exact_profiles_leave_gaps_the_batcher_pads(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        [
            str(model),
            "-o",
            str(tmp_path / "p.plan"),
            "--batch-sizes",
            "1,8,32",
            "--exact-profiles",
            "--dry-run",
        ],
        capsys,
    )
    assert code == 0
    assert "x 8x16 / 8x16 / 8x16" in out
    assert "dispatch: 1, 8, 32" in out


def test_dynamic_dimensions_besides_the_batch_need_a_size(
    seq_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = str(tmp_path / "p.plan")
    code, _, err = run([str(seq_model), "-o", plan, "--dry-run"], capsys)
    assert code == 2
    assert err == (
        "error: input 'ids' has a dynamic dimension 1 besides the batch; give the dimensions "
        "after the batch with --input-shape ids=N\n"
    )
    code, out, _ = run(
        [
            str(seq_model),
            "-o",
            plan,
            "--dry-run",
            "--input-shape",
            "ids=128",
            "--max-batch-size",
            "8",
        ],
        capsys,
    )
    assert code == 0
    assert "ids 3x128 / 4x128 / 4x128" in out and "ids 5x128 / 8x128 / 8x128" in out
    assert "bias" not in out.split("in the plan:")[1]  # fixed inputs need no profile


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--batch-sizes", "1,x"], "--batch-sizes must be comma-separated integers"),
        (["--batch-sizes", "0,4"], "between 1 and 65536"),
        (["--max-batch-size", "0"], "--max-batch-size must be between 1 and 65536"),
        (["--max-profiles", "0"], "--max-profiles must be between 1 and 64"),
        (["--contexts", "0"], "--contexts must be between 1 and 64"),
        (["--workspace-mb", "0"], "--workspace-mb must be at least 1"),
        (["--device", "-1"], "--device must not be negative"),
        (
            ["--batch-sizes", "1,2,3,4,5", "--exact-profiles"],
            "5 exact profiles, more than the limit of 4",
        ),
        (["--precision", "int8"], "int8 needs calibration samples"),
        (["--calibration-data", "x=a.npy"], "only used with --precision int8"),
        (["--calibration-data", "x"], "--calibration-data takes NAME=VALUE"),
        (["--input-shape", "x=3by4"], "--input-shape x= takes sizes like 3x224x224"),
        (["--input-shape", "nope=3"], "'nope', which is not an input"),
        (
            ["--input-shape", "x=17"],
            r"fixed shape \[-1, 16\]|must give the dimensions after the batch",
        ),
    ],
)
def test_argument_errors(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    code, out, err = run([str(model), "-o", str(tmp_path / "p.plan"), "--dry-run", *extra], capsys)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1
    assert re.search(message, err), err


def test_file_errors(model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run([str(tmp_path / "absent.onnx"), "-o", str(tmp_path / "p.plan")], capsys)
    assert (code, err) == (2, "error: the ONNX model does not exist or is not a file\n")
    existing = tmp_path / "model.plan"
    existing.write_bytes(b"old")
    code, _, err = run([str(model), "-o", str(existing)], capsys)
    assert code == 2 and "exists (--force overwrites it)" in err
    code, _, err = run([str(model), "-o", str(tmp_path / "no" / "dir" / "p.plan")], capsys)
    assert code == 2 and "output directory" in err and "does not exist" in err
    code, _, err = run([str(model), "-o", str(model), "--force"], capsys)
    assert code == 2 and "would overwrite the ONNX model" in err
    with pytest.raises(SystemExit) as info:  # argparse: exclusive options
        main([str(model), "-o", "p.plan", "--batch-sizes", "1", "--max-batch-size", "2"])
    assert info.value.code == 2


@pytest.mark.skipif(HAVE_TENSORRT, reason="tensorrt is installed here")
def test_building_without_tensorrt_says_so(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = tmp_path / "model.plan"
    code = cli.main(["build-engine", str(model), "-o", str(plan), "--precision", "fp16"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: TensorRT is not installed on this server")
    assert not plan.exists()


def test_int8_calibration_inputs(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    samples = tmp_path / "x.npy"
    np.save(samples, np.random.default_rng(0).uniform(size=(50, 16)).astype(np.float32))
    args = [str(model), "-o", str(tmp_path / "p.plan"), "--precision", "int8", "--dry-run"]
    code, out, _ = run(
        [*args, "--calibration-data", f"x={samples}", "--calibration-batch", "16"], capsys
    )
    assert code == 0
    assert "calibration: 50 samples in 3 batch(es) of 16" in out
    np.save(samples, np.zeros((50, 15), np.float32))
    code, _, err = run([*args, "--calibration-data", f"x={samples}"], capsys)
    assert code == 2 and "have shape [50, 15]; expected [samples, 16]" in err
    np.save(samples, np.zeros((50, 16), np.complex64))
    code, _, err = run([*args, "--calibration-data", f"x={samples}"], capsys)
    assert code == 2 and "are complex64, the input is float32" in err
    code, _, err = run([*args, "--calibration-data", f"x={tmp_path / 'none.npy'}"], capsys)
    assert code == 2 and "calibration file for 'x' does not exist" in err
    code, _, err = run([*args, "--calibration-data", f"y={samples}"], capsys)
    assert code == 2 and "names 'y', which is not an input" in err


def test_calibration_set_batches(tmp_path: Path) -> None:
    inputs = [
        ModelInput("a", np.dtype(np.float32), (-1, 2)),
        ModelInput("b", np.dtype(np.int32), (-1,)),
    ]
    np.save(tmp_path / "a.npy", np.arange(20, dtype=np.float64).reshape(10, 2))
    np.save(tmp_path / "b.npy", np.arange(10, dtype=np.int32))
    data = CalibrationSet({"a": tmp_path / "a.npy", "b": tmp_path / "b.npy"}, inputs, 4)
    batches = list(data)
    assert len(batches) == data.batches == 2  # the last 2 samples do not fill a batch
    assert batches[1]["a"].dtype == np.float32 and batches[1]["a"].flags.c_contiguous
    np.testing.assert_array_equal(batches[1]["b"], [4, 5, 6, 7])
    assert data.batch_nbytes("a") == 4 * 2 * 4 and data.batch_shape("b") == (4,)
    np.save(tmp_path / "b.npy", np.arange(9, dtype=np.int32))
    with pytest.raises(BuildError, match="different numbers of samples"):
        CalibrationSet({"a": tmp_path / "a.npy", "b": tmp_path / "b.npy"}, inputs, 4)
    with pytest.raises(BuildError, match="no samples for input 'b'"):
        CalibrationSet({"a": tmp_path / "a.npy"}, inputs, 4)
    with pytest.raises(BuildError, match="fewer than one batch of 64"):
        CalibrationSet({"a": tmp_path / "a.npy"}, inputs[:1], 64)


def test_calibration_of_inputs_without_a_batch(tmp_path: Path) -> None:
    inputs = [ModelInput("img", np.dtype(np.float32), (1, 3, 4))]
    np.save(tmp_path / "img.npy", np.zeros((5, 1, 3, 4), np.float32))
    with pytest.raises(BuildError, match="use --calibration-batch 1"):
        CalibrationSet({"img": tmp_path / "img.npy"}, inputs, 4)
    data = CalibrationSet({"img": tmp_path / "img.npy"}, inputs, 1)
    assert data.batches == 5 and data.batch_nbytes("img") == 12 * 4


def test_input_profiles_without_a_batch_dimension() -> None:
    inputs = [ModelInput("img", np.dtype(np.float32), (1, 3, -1, -1))]
    (profile,) = input_profiles(inputs, [BatchProfile(1, 8, 8)], {"img": (1, 3, 224, 224)})
    assert profile == {"img": ((1, 3, 224, 224),) * 3}
    assert input_profiles([ModelInput("x", np.dtype(np.float32), (2, 3))], []) == ()
    with pytest.raises(BuildError, match="give at least one batch size"):
        input_profiles([ModelInput("x", np.dtype(np.float32), (-1, 3))], [])


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_display() -> None:
    log = io.StringIO()
    display = ProgressDisplay(log)
    display.phase_start("Building the engine", None, 0)
    display.phase_start("Tactic selection", "Building the engine", 3)
    assert display.step("Tactic selection", 0)
    display.phase_start("deep", "Tactic selection", 2)  # nested deeper: not logged
    display.phase_finish("deep")
    display.phase_finish("Tactic selection")
    display.phase_finish("Building the engine")
    display.phase_finish("never started")
    lines = log.getvalue().splitlines()
    assert len(lines) == 4
    assert lines[0].endswith("] Building the engine")
    assert lines[1].endswith("]   Tactic selection")
    assert "Tactic selection: " in lines[2] and "Building the engine: " in lines[3]

    tty = _Tty()
    display = ProgressDisplay(tty)
    display.phase_start("Building", None, 0)
    display.phase_start("Tactics", "Building", 10)
    display.step("Tactics", 4)
    display.phase_finish("Tactics")
    display.phase_finish("Building")
    text = tty.getvalue()
    assert "\r" in text and "Building > Tactics 5/10" in text
    assert text.endswith("\n") and "Building: done in" in text

    quiet = io.StringIO()
    display = ProgressDisplay(quiet, quiet=True)
    display.phase_start("x", None, 1)
    display.phase_finish("x")
    assert quiet.getvalue() == ""


def test_ranges() -> None:
    assert _ranges((1, 2, 3, 8, 10, 11)) == "1..3, 8, 10..11"
    assert _ranges(()) == ""
