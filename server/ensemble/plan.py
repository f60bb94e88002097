"""An ensemble's dataflow, read from its ``ensemble_scheduling`` and checked
on its own: every tensor a step reads is an ensemble input or another step's
output, no tensor has two producers, every ensemble output is produced, and
the steps form no cycle. Checks against the composing models' inputs and
outputs are ``server.ensemble.checks``.

Names follow Triton's: a step's ``input_map`` maps the composing model's
input (key) to an ensemble tensor (value), its ``output_map`` the model's
output (key) to an ensemble tensor (value).
"""

from __future__ import annotations

from dataclasses import dataclass

from inferd.protos import model_config_pb2
from inferd.server.repository.errors import RepositoryError
from inferd.server.repository.source import ENSEMBLE_PLATFORM

__all__ = ["ENSEMBLE_PLATFORM", "EnsemblePlan", "Step", "build_plan", "composing_models"]


@dataclass(frozen=True, slots=True)
class Step:
    index: int  # 1-based, as an operator counts the config's steps
    model: str
    #: "" lets the model's version policy (and routes) choose; Triton's -1.
    version: str
    #: Composing model input -> ensemble tensor.
    inputs: tuple[tuple[str, str], ...]
    #: Composing model output -> ensemble tensor.
    outputs: tuple[tuple[str, str], ...]
    #: Indices (into ``EnsemblePlan.steps``) of the steps producing this one's inputs.
    after: tuple[int, ...] = ()

    @property
    def where(self) -> str:
        return f"step {self.index} (model '{self.model}')"

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(key for key, _ in self.outputs)


@dataclass(frozen=True, slots=True)
class EnsemblePlan:
    name: str
    #: In an order that runs every producer before its consumers.
    steps: tuple[Step, ...]
    inputs: frozenset[str]
    outputs: tuple[str, ...]
    #: Triton's ``max_inflight_requests``: step requests in flight at once per
    #: step, over all of the ensemble's requests (0: no limit).
    max_inflight: int = 0

    @property
    def models(self) -> tuple[str, ...]:
        """The composing models, each once, in step order."""
        return tuple(dict.fromkeys(step.model for step in self.steps))


def composing_models(config: model_config_pb2.ModelConfig) -> tuple[str, ...]:
    """The model names an ensemble config's steps name (unchecked)."""
    steps = config.ensemble_scheduling.step
    return tuple(dict.fromkeys(step.model_name for step in steps if step.model_name))


def build_plan(config: model_config_pb2.ModelConfig) -> EnsemblePlan:
    """The checked dataflow of an ensemble config; ``RepositoryError`` names
    the step and tensor at fault."""
    name = config.name
    where = f"ensemble '{name}'"
    if config.WhichOneof("scheduling_choice") != "ensemble_scheduling":
        raise RepositoryError(f"{where}: platform 'ensemble' needs ensemble_scheduling")
    if not config.ensemble_scheduling.step:
        raise RepositoryError(f"{where}: ensemble_scheduling has no step")
    if not config.input or not config.output:
        raise RepositoryError(f"{where}: an ensemble must declare its inputs and outputs")
    inputs = frozenset(t.name for t in config.input)
    outputs = tuple(t.name for t in config.output)
    steps = [_step(where, i, s) for i, s in enumerate(config.ensemble_scheduling.step, 1)]
    producer: dict[str, Step] = {}
    for step in steps:
        if step.model == name:
            raise RepositoryError(f"{where}: {step.where} names the ensemble itself")
        for _, tensor in step.outputs:
            if tensor in inputs:
                raise RepositoryError(
                    f"{where}: {step.where} writes '{tensor}', which is an ensemble input"
                )
            other = producer.get(tensor)
            if other is not None:
                raise RepositoryError(
                    f"{where}: tensor '{tensor}' is written by both {other.where} and {step.where}"
                )
            producer[tensor] = step
    for step in steps:
        for _, tensor in step.inputs:
            if tensor not in inputs and tensor not in producer:
                raise RepositoryError(
                    f"{where}: {step.where} reads '{tensor}', which is neither an ensemble "
                    "input nor written by any step"
                )
    for tensor in outputs:
        if tensor not in producer:
            raise RepositoryError(f"{where}: no step writes the ensemble output '{tensor}'")
    ordered = _ordered(where, steps, producer)
    limit = config.ensemble_scheduling.max_inflight_requests
    return EnsemblePlan(name, ordered, inputs, outputs, limit)


def _step(where: str, index: int, step: model_config_pb2.ModelEnsembling.Step) -> Step:
    if not step.model_name:
        raise RepositoryError(f"{where}: step {index} names no model")
    here = f"{where}: step {index} (model '{step.model_name}')"
    if step.model_version < -1 or step.model_version == 0:
        raise RepositoryError(f"{here}: model_version must be -1 (latest) or a version number")
    if not step.output_map:
        raise RepositoryError(f"{here}: output_map is empty")
    version = "" if step.model_version == -1 else str(step.model_version)
    return Step(
        index,
        step.model_name,
        version,
        tuple(sorted(step.input_map.items())),
        tuple(sorted(step.output_map.items())),
    )


def _ordered(where: str, steps: list[Step], producer: dict[str, Step]) -> tuple[Step, ...]:
    """Steps in dependency order (Kahn's algorithm); a cycle fails, naming its steps."""
    needs = {s.index: {producer[t].index for _, t in s.inputs if t in producer} for s in steps}
    by_index = {s.index: s for s in steps}
    order: list[int] = []
    ready = [i for i, deps in needs.items() if not deps]
    while ready:
        current = ready.pop(0)
        order.append(current)
        for other, deps in needs.items():
            if current in deps:
                deps.discard(current)
                if not deps and other not in order and other not in ready:
                    ready.append(other)
    if len(order) != len(steps):
        stuck = ", ".join(by_index[i].where for i in sorted(set(needs) - set(order)))
        raise RepositoryError(f"{where}: the steps form a cycle: {stuck}")
    position = {index: n for n, index in enumerate(order)}
    ordered = []
    for index in order:
        step = by_index[index]
        after = sorted({position[producer[t].index] for _, t in step.inputs if t in producer})
        ordered.append(
            Step(step.index, step.model, step.version, step.inputs, step.outputs, tuple(after))
        )
    return tuple(ordered)
