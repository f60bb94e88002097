"""Build a TensorRT plan from an ONNX model (``inferd build-engine``).

The request is checked first, without a GPU (``engines.tensorrt.build_spec``,
``engines.tensorrt.calibration``). ``build_plan`` then imports ``tensorrt``
and ``pycuda``, parses the model, configures precision, workspace, profiles
and calibration (``configure``), builds (reporting progress through
TensorRT's ``IProgressMonitor`` where the release has it, else by phase),
and writes the plan and its sidecar (``engines.tensorrt.plan``) atomically.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from inferd.engines.tensorrt.build_spec import (
    BuildError,
    BuildSpec,
    ModelInput,
    input_profiles,
    read_onnx_inputs,
)
from inferd.engines.tensorrt.calibration import CalibrationSet, make_calibrator
from inferd.engines.tensorrt.plan import PlanInfo, sha256, write_atomically, write_sidecar
from inferd.engines.tensorrt.profiles import ShapeRange, replicate
from inferd.engines.tensorrt.runtime import CudaDevice, TrtLogger, import_cuda, import_tensorrt

#: The former module's name, kept so that log filters and dashboards still match.
log = logging.getLogger("inferd.engines.trt_build")


class Progress(Protocol):
    """What a build reports. TensorRT's phases nest (``parent``); ``step``
    returning False cancels the build."""

    def phase_start(self, name: str, parent: str | None, steps: int) -> None: ...

    def step(self, name: str, step: int) -> bool: ...

    def phase_finish(self, name: str) -> None: ...


class _NoProgress:
    def phase_start(self, name: str, parent: str | None, steps: int) -> None:
        return None

    def step(self, name: str, step: int) -> bool:
        return True

    def phase_finish(self, name: str) -> None:
        return None


class _Phase:
    """One of our own phases (parse, configure, build, write), reported like
    TensorRT's."""

    def __init__(self, progress: Progress, name: str) -> None:
        self.progress, self.name = progress, name

    def __enter__(self) -> None:
        self.progress.phase_start(self.name, None, 0)

    def __exit__(self, *exc: object) -> None:
        self.progress.phase_finish(self.name)


def _make_monitor(trt: Any, progress: Progress) -> Any:
    """A ``trt.IProgressMonitor`` forwarding to ``progress``. Ctrl-C during a
    build arrives in one of its callbacks (the only Python code that runs);
    it cancels the build there instead of unwinding through TensorRT."""

    class Monitor(trt.IProgressMonitor):  # type: ignore[misc]
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self.cancelled = False

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            try:
                progress.phase_start(phase_name, parent_phase, int(num_steps))
            except KeyboardInterrupt:
                self.cancelled = True
            except Exception:
                log.debug("progress display failed", exc_info=True)

        def step_complete(self, phase_name: str, step: int) -> bool:
            try:
                go_on = progress.step(phase_name, int(step))
            except KeyboardInterrupt:
                self.cancelled = True
            except Exception:
                log.debug("progress display failed", exc_info=True)
                go_on = True
            return bool(go_on) and not self.cancelled

        def phase_finish(self, phase_name: str) -> None:
            try:
                progress.phase_finish(phase_name)
            except KeyboardInterrupt:
                self.cancelled = True
            except Exception:
                log.debug("progress display failed", exc_info=True)

    return Monitor()


def _parser_errors(parser: Any) -> str:
    found = [str(parser.get_error(i)) for i in range(int(parser.num_errors))]
    return "; ".join(found[:5]) or "the ONNX parser gave no reason"


def configure(
    trt: Any,
    builder: Any,
    spec: BuildSpec,
    inputs: Sequence[ModelInput],
    profiles: Sequence[Mapping[str, ShapeRange]],
    calibration: CalibrationSet | None,
    calibrator: Any,
) -> Any:
    """The builder config: workspace, precision flags, the optimization
    profiles (``spec.contexts`` copies of each), and INT8 calibration."""
    config = builder.create_builder_config()
    if spec.workspace_bytes:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, spec.workspace_bytes)
    if spec.precision == "fp32":
        config.clear_flag(trt.BuilderFlag.TF32)
    if spec.precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    for shapes in replicate(profiles, spec.contexts) if profiles else ():
        profile = builder.create_optimization_profile()
        for name, (low, opt, high) in shapes.items():
            profile.set_shape(name, low, opt, high)
        config.add_optimization_profile(profile)
    if calibration is not None:
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = calibrator
        if profiles:
            # Calibration runs at one shape: a batch of samples.
            fixed = builder.create_optimization_profile()
            batched = {i.name for i in inputs if i.batched}
            for name, (pinned, _, _) in profiles[0].items():
                shape = calibration.batch_shape(name) if name in batched else pinned
                fixed.set_shape(name, shape, shape, shape)
            config.set_calibration_profile(fixed)
    return config


def build_plan(spec: BuildSpec, progress: Progress | None = None) -> PlanInfo:
    """Build ``spec.onnx_path`` into ``spec.plan_path`` (+ sidecar) on GPU
    ``spec.device_id``. Raises ``EngineError`` when TensorRT, pycuda or a
    GPU is missing, ``BuildError`` when the build fails."""
    progress = progress or _NoProgress()
    inputs = read_onnx_inputs(spec.onnx_path)
    profiles = input_profiles(inputs, spec.batch_profiles, spec.input_shapes)
    calibration = (
        CalibrationSet(spec.calibration_files, inputs, spec.calibration_batch, spec.input_shapes)
        if spec.precision == "int8"
        else None
    )
    trt = import_tensorrt()
    cuda = import_cuda()
    device = CudaDevice(cuda, spec.device_id)
    logger = TrtLogger.get(trt)
    started = time.monotonic()
    calibrator: Any = None
    try:
        with device.active():
            builder = trt.Builder(logger)
            network = builder.create_network(0)  # explicit batch: the only mode in TensorRT 10
            parser = trt.OnnxParser(network, logger)
            with _Phase(progress, "Parsing the ONNX model"):
                if not parser.parse_from_file(str(spec.onnx_path)):
                    raise BuildError(f"TensorRT cannot parse the model: {_parser_errors(parser)}")
            network_inputs = {network.get_input(i).name for i in range(network.num_inputs)}
            if network_inputs != {i.name for i in inputs}:
                raise BuildError(
                    "TensorRT sees inputs "
                    f"{sorted(network_inputs)}, the ONNX graph {sorted(i.name for i in inputs)}"
                )
            with _Phase(progress, "Configuring the builder"):
                if calibration is not None:
                    calibrator = make_calibrator(trt, cuda, calibration, spec.calibration_cache)
                config = configure(trt, builder, spec, inputs, profiles, calibration, calibrator)
                monitor = None
                if hasattr(trt, "IProgressMonitor"):
                    monitor = _make_monitor(trt, progress)
                    config.progress_monitor = monitor
            logger.take()
            with _Phase(progress, "Building the engine (minutes for large models)"):
                serialized = builder.build_serialized_network(network, config)
            if serialized is None:
                if monitor is not None and monitor.cancelled:
                    raise BuildError("the build was cancelled")
                said = logger.take()
                raise BuildError(f"TensorRT could not build the plan: {said or 'no reason given'}")
            with _Phase(progress, "Writing the plan"):
                data = bytes(memoryview(serialized))
                write_atomically(spec.plan_path, data)
                info = PlanInfo(
                    tensorrt_version=str(trt.__version__),
                    compute_capability=device.compute_capability,
                    device_name=device.name,
                    precision=spec.precision,
                    plan_sha256=sha256(data),
                    plan_bytes=len(data),
                    batch_profiles=tuple(spec.batch_profiles) if profiles else (),
                    contexts=spec.contexts,
                    onnx_sha256=sha256(spec.onnx_path.read_bytes()),
                    built_at=datetime.datetime.now(datetime.timezone.utc).isoformat(
                        timespec="seconds"
                    ),
                )
                write_sidecar(spec.plan_path, info)
            if calibrator is not None:
                calibrator.free()
                calibrator = None
    finally:
        if calibrator is not None:
            with device.active():
                calibrator.free()
        device.release()
    log.info("plan built in %.1f s", time.monotonic() - started)
    return info
