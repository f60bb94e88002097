"""Triton's auto-complete: fill a config in from the engine's signature, and
check the configured tensors against it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, TypeVar, cast

from inferd.engines.base import Signature, TensorSpec
from inferd.protos import model_config_pb2
from inferd.protos.datatypes import CONFIG_TO_V2, V2_TO_CONFIG, v2_datatype
from inferd.server.repository.errors import RepositoryError
from inferd.server.repository.source import BACKEND_PLATFORMS
from inferd.server.reshape import reshape_problem

if TYPE_CHECKING:
    from google.protobuf.internal.containers import RepeatedCompositeFieldContainer


_Tensor = model_config_pb2.ModelInput | model_config_pb2.ModelOutput
_TensorT = TypeVar("_TensorT", model_config_pb2.ModelInput, model_config_pb2.ModelOutput)


def complete_config(
    config: model_config_pb2.ModelConfig,
    signature: Signature,
    *,
    default_max_batch_size: int = 64,
) -> model_config_pb2.ModelConfig:
    """Triton's auto-complete: a copy of ``config`` with inputs, outputs,
    ``max_batch_size`` and ``platform`` filled in from the engine's signature,
    and the configured tensors checked against it.

    A config with no inputs, no outputs and ``max_batch_size`` 0 counts as
    auto-completed: if every tensor's first dimension is dynamic it gets
    ``max_batch_size = default_max_batch_size`` (0 turns that off) and the
    batch dimension is dropped from dims. Other fields are left as they are.
    """
    name = config.name or "<unnamed>"
    out = model_config_pb2.ModelConfig()
    out.CopyFrom(config)
    if not out.platform and out.backend in BACKEND_PLATFORMS and out.backend != "python":
        out.platform = BACKEND_PLATFORMS[out.backend]
    if out.max_batch_size < 0:
        raise RepositoryError(f"model '{name}': max_batch_size must not be negative")

    tensors = signature.inputs + signature.outputs
    if (
        not out.input
        and not out.output
        and out.max_batch_size == 0
        and default_max_batch_size > 0
        and tensors
        and all(t.shape and t.shape[0] == -1 for t in tensors)
    ):
        limit = max(signature.batch_sizes) if signature.batch_sizes else default_max_batch_size
        out.max_batch_size = min(default_max_batch_size, limit)

    batching = out.max_batch_size > 0
    if batching:
        _check_batch_dims(name, out.max_batch_size, signature)

    if out.input:
        _check_tensors(name, "input", out.input, signature.inputs, batching)
        configured = {t.name for t in out.input}
        missing = [t.name for t in signature.inputs if t.name not in configured]
        if missing:
            raise RepositoryError(
                f"model '{name}': model input(s) {', '.join(repr(m) for m in missing)} "
                "are not in config.pbtxt"
            )
    else:
        _fill(name, out.input, signature.inputs, batching)
    if out.output:
        _check_tensors(name, "output", out.output, signature.outputs, batching)
    else:
        _fill(name, out.output, signature.outputs, batching)
    return out


def _check_batch_dims(name: str, max_batch_size: int, signature: Signature) -> None:
    for spec in signature.inputs + signature.outputs:
        # A fixed first dim equal to max_batch_size is an engine built for
        # one batch size (the scheduler pads up to it).
        if not spec.shape or spec.shape[0] not in (-1, max_batch_size):
            raise RepositoryError(
                f"model '{name}', tensor '{spec.name}': max_batch_size is {max_batch_size} "
                f"but the model's shape {list(spec.shape)} has no batch dimension "
                "(the first dimension must be -1)"
            )
    if signature.batch_sizes and max_batch_size > max(signature.batch_sizes):
        raise RepositoryError(
            f"model '{name}': max_batch_size {max_batch_size} is larger than the "
            f"largest batch the model runs ({max(signature.batch_sizes)})"
        )


def _datatype(name: str, spec: TensorSpec) -> str:
    try:
        return v2_datatype(spec.dtype)
    except ValueError:
        raise RepositoryError(
            f"model '{name}', tensor '{spec.name}': the model's type {spec.dtype} "
            "has no protocol datatype"
        ) from None


def _fill(
    name: str,
    target: RepeatedCompositeFieldContainer[_TensorT],
    specs: Sequence[TensorSpec],
    batching: bool,
) -> None:
    for spec in specs:
        tensor = target.add()
        tensor.name = spec.name
        type_name = V2_TO_CONFIG[_datatype(name, spec)]
        tensor.data_type = cast(
            "model_config_pb2.DataType", model_config_pb2.DataType.Value(type_name)
        )
        tensor.dims.extend(spec.shape[1:] if batching else spec.shape)


def _check_tensors(
    name: str,
    kind: str,
    configured: Iterable[_Tensor],
    specs: Sequence[TensorSpec],
    batching: bool,
) -> None:
    by_name = {s.name: s for s in specs}
    seen: set[str] = set()
    for tensor in configured:
        where = f"model '{name}', {kind} '{tensor.name}'"
        if tensor.name in seen:
            raise RepositoryError(f"{where}: configured more than once")
        seen.add(tensor.name)
        spec = by_name.get(tensor.name)
        if spec is None:
            known = ", ".join(repr(s) for s in by_name) or "none"
            raise RepositoryError(f"{where}: the model has no such {kind} (it has {known})")
        config_type = model_config_pb2.DataType.Name(tensor.data_type)
        model_type = _datatype(name, spec)
        if CONFIG_TO_V2.get(config_type) != model_type:
            raise RepositoryError(
                f"{where}: config data_type {config_type} does not match the model's "
                f"{V2_TO_CONFIG[model_type]}"
            )
        # With reshape the model sees reshape.shape, not dims.
        if tensor.HasField("reshape"):
            problem = reshape_problem(tensor.dims, tensor.reshape.shape, batching)
            if problem is not None:
                raise RepositoryError(f"{where}: {problem}")
        dims = list(tensor.reshape.shape if tensor.HasField("reshape") else tensor.dims)
        model_dims = list(spec.shape[1:] if batching else spec.shape)
        if not _dims_match(dims, model_dims):
            shown = "reshape" if tensor.HasField("reshape") else "dims"
            batch_note = " (without the batch dimension)" if batching else ""
            raise RepositoryError(
                f"{where}: config {shown} {dims} do not match the model's shape "
                f"{model_dims}{batch_note}{_reshape_hint(tensor, kind, model_dims, batching)}"
            )


def _dims_match(dims: Sequence[int], model_dims: Sequence[int]) -> bool:
    return len(dims) == len(model_dims) and all(
        a == b or a == -1 or b == -1 for a, b in zip(dims, model_dims, strict=True)
    )


def _reshape_hint(tensor: _Tensor, kind: str, model_dims: list[int], batching: bool) -> str:
    """The fix when the config's shape is the model's but for a trailing 1
    (``[4]`` against ``[4, 1]``, or ``[1]`` against a per-row scalar ``[]``):
    ``reshape``, which Triton's configs use for exactly this; "" otherwise."""
    dims = list(tensor.dims)
    shown = list(tensor.reshape.shape if tensor.HasField("reshape") else dims)
    if not (_dims_match([*shown, 1], model_dims) or _dims_match(shown, [*model_dims, 1])):
        return ""
    # Only a suggestion that would load: the reshape must stand for the dims.
    if reshape_problem(dims, model_dims, batching) is not None:
        return ""
    shape = "[ " + ", ".join(str(d) for d in model_dims) + " ]" if model_dims else "[ ]"
    action = "set" if tensor.HasField("reshape") else "add"
    return (
        f"; they differ only by a trailing 1, which reshape bridges: {action} "
        f"reshape: {{ shape: {shape} }} on this {kind} (clients keep dims {dims}, "
        f"the model works on {model_dims})"
    )
