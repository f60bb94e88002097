"""Engine test doubles shared by the scheduler tests: y = 2x on float32 rows.

Doubles on purpose: these tests need to hold, slow down or break a batch at
will, which a real onnxruntime session cannot do; the real engine is covered
end to end in the server and client tests."""

from __future__ import annotations

import numpy as np

from inferd.engines import Engine, Signature, TensorSpec


class DoublingEngine(Engine):
    """Signature x -> y, both float32 [-1, width]; subclasses supply ``infer``."""

    def __init__(self, width: int = 2) -> None:
        self._sig = Signature(
            inputs=(TensorSpec("x", np.dtype(np.float32), (-1, width)),),
            outputs=(TensorSpec("y", np.dtype(np.float32), (-1, width)),),
        )

    @property
    def signature(self) -> Signature:
        return self._sig

    def close(self) -> None:
        pass
