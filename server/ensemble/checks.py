"""An ensemble's steps against the composing models as loaded: each mapped
name is an input or output of its model, no required input is left unmapped,
and the datatype and shape of every tensor agree at both ends (Triton's
load-time checks). Failures are ``RepositoryError``s naming step and tensor."""

from __future__ import annotations

from collections.abc import Callable

from inferd.server.ensemble.plan import EnsemblePlan, Step
from inferd.server.model_io import ModelIO, TensorInfo
from inferd.server.repository.errors import RepositoryError

#: The composing model's IO for a step (its version, or the serving one);
#: raises ``RepositoryError`` saying why there is none.
StepIO = Callable[[Step], ModelIO]


def check_steps(plan: EnsemblePlan, io: ModelIO, step_io: StepIO) -> None:
    where = f"ensemble '{plan.name}'"
    #: Ensemble tensor -> (its description, what it is), as far as known.
    known: dict[str, tuple[str, TensorInfo]] = {
        name: (f"ensemble input '{name}'", info) for name, info in io.inputs.items()
    }
    for step in plan.steps:
        model = step_io(step)
        here = f"{where}: {step.where}"
        if io.batched and (not model.batched or model.max_batch_size < io.max_batch_size):
            raise RepositoryError(
                f"{here}: the ensemble's max_batch_size {io.max_batch_size} needs a model "
                f"that batches at least that many rows (it takes {model.max_batch_size})"
            )
        mapped = {key for key, _ in step.inputs}
        for key, tensor in step.inputs:
            info = model.inputs.get(key)
            if info is None:
                raise RepositoryError(
                    f"{here}: input_map names '{key}', which is not an input of the model "
                    f"(its inputs are {sorted(model.inputs)})"
                )
            source = known.get(tensor)
            if source is not None:
                _agree(here, source[0], source[1], f"its input '{key}'", info)
        missing = sorted(n for n, t in model.inputs.items() if n not in mapped and not t.optional)
        if missing:
            raise RepositoryError(f"{here}: input_map leaves the model's input(s) {missing} unset")
        for key, tensor in step.outputs:
            info = model.outputs.get(key)
            if info is None:
                raise RepositoryError(
                    f"{here}: output_map names '{key}', which is not an output of the model "
                    f"(its outputs are {sorted(model.outputs)})"
                )
            known[tensor] = (f"{step.where}'s output '{key}'", info)
    for name, info in io.outputs.items():
        source = known[name]  # the plan guarantees a producer
        _agree(where, source[0], source[1], f"the ensemble output '{name}'", info)


def _agree(where: str, what: str, source: TensorInfo, into: str, target: TensorInfo) -> None:
    if source.datatype != target.datatype:
        raise RepositoryError(
            f"{where}: {what} is {source.datatype} but {into} is {target.datatype}"
        )
    if not _compatible(source.shape, target.shape):
        raise RepositoryError(
            f"{where}: {what} has shape {list(source.shape)} but {into} has shape "
            f"{list(target.shape)}"
        )


def _compatible(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    """Same rank, and each dimension equal where neither is variable (-1)."""
    return len(a) == len(b) and all(x == y or -1 in (x, y) for x, y in zip(a, b, strict=True))
