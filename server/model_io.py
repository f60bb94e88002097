"""What a loaded model accepts and returns, as the codec validates it.

Built once per model version from its completed config, so the per-request
path only does dictionary look-ups.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from inferd.protos import model_config_pb2
from inferd.protos.datatypes import CONFIG_TO_V2


@dataclass(frozen=True, slots=True)
class TensorInfo:
    name: str
    datatype: str  # V2 name, e.g. "FP32"
    #: Full shape as a request sends it: with a leading -1 batch dimension
    #: when the model batches; -1 marks any size.
    shape: tuple[int, ...]
    optional: bool = False
    #: The shape the model sees instead (config ``reshape``), without the
    #: batch dimension; None when the config has no reshape (server.reshape).
    reshape: tuple[int, ...] | None = None
    #: Class labels of an output, from its ``label_filename`` (server.classification).
    labels: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ModelIO:
    inputs: dict[str, TensorInfo]
    outputs: dict[str, TensorInfo]
    #: 0 when the model has no batch dimension.
    max_batch_size: int

    @property
    def batched(self) -> bool:
        return self.max_batch_size > 0

    @classmethod
    def from_config(
        cls,
        config: model_config_pb2.ModelConfig,
        labels: Mapping[str, tuple[str, ...]] | None = None,
    ) -> ModelIO:
        """``labels``: each output's labels (``label_filename``'s lines)."""
        lead = (-1,) if config.max_batch_size > 0 else ()
        labels = labels or {}

        def reshape(
            t: model_config_pb2.ModelInput | model_config_pb2.ModelOutput,
        ) -> tuple[int, ...] | None:
            return tuple(t.reshape.shape) if t.HasField("reshape") else None

        def datatype(enum_value: int) -> str:
            return CONFIG_TO_V2[str(model_config_pb2.DataType.Name(enum_value))]

        inputs = {
            t.name: TensorInfo(
                t.name, datatype(t.data_type), lead + tuple(t.dims), t.optional, reshape(t)
            )
            for t in config.input
        }
        outputs = {
            t.name: TensorInfo(
                t.name,
                datatype(t.data_type),
                lead + tuple(t.dims),
                reshape=reshape(t),
                labels=labels.get(t.name, ()),
            )
            for t in config.output
        }
        return cls(inputs, outputs, config.max_batch_size)
