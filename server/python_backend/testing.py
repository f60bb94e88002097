"""Unit-test a Python model without a server (docs/python-models.md).

::

    from inferd.server.python_backend.testing import load_model

    with load_model("models/preprocess") as model:
        outputs = model.execute({"RAW": raw})            # one request
        answers = model.execute_batch([{"RAW": a}, {"RAW": b}])  # one execute call

The model runs in this process (breakpoints and coverage work) with the
``args`` the server would pass, and its responses are checked against the
config as the server checks them: a wrong output name, datatype or shape
raises ``TritonError`` naming the output. BLS calls go to the functions
given as ``models`` (name -> function of the input arrays returning the
output arrays); a call to any other model gets a NOT_FOUND error, as on the
server.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import itertools
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from inferd.engines.base import EngineRequestError, RequestCall
from inferd.server.python_backend import pb_utils
from inferd.server.python_backend.loading import config_json, config_signature, initialize_args
from inferd.server.python_backend.outputs import as_request_arrays, checked_outputs
from inferd.server.python_backend.stub import CODE_OF_STATUS, load_model_class
from inferd.server.repository import PYTHON_PLATFORM, ModelRepository

#: A stand-in for a model a BLS call reaches: input arrays -> output arrays.
FakeModel = Callable[[dict[str, np.ndarray]], Mapping[str, np.ndarray]]

_modules = itertools.count()


class LoadedModel:
    """One Python model, initialized; ``close`` (or the ``with`` block's end) finalizes it."""

    def __init__(
        self, directory: Path, version: int | None, models: Mapping[str, FakeModel]
    ) -> None:
        source = ModelRepository(directory.parent).source(directory.name)
        if source.platform != PYTHON_PLATFORM:
            raise ValueError(f"model '{directory.name}' is not a Python model")
        chosen = version if version is not None else max(source.policy_versions)
        model_file = source.versions[chosen]
        self.name = source.name
        self.signature = config_signature(source.config)
        self._batched = source.config.max_batch_size > 0
        #: ``args["model_config"]`` as a dict.
        self.config: dict[str, Any] = config_json(source.config)
        self._models = dict(models)
        self._loop = asyncio.new_event_loop()
        cls = load_model_class(model_file, f"_inferd_model_{next(_modules)}")
        self.model = cls()
        pb_utils.set_bls_handler(self._bls)
        if hasattr(self.model, "initialize"):
            self.model.initialize(initialize_args(self.name, chosen, model_file, source.config, 0))
        self._closed = False

    def execute(
        self, inputs: Mapping[str, Any], outputs: Sequence[str] = ()
    ) -> dict[str, np.ndarray]:
        """Run one request; raises ``TritonError`` when its response is an
        error or does not match the config."""
        (answer,) = self.execute_batch([inputs], [outputs])
        if isinstance(answer, pb_utils.TritonError):
            raise answer
        return answer

    def execute_batch(
        self,
        requests: Sequence[Mapping[str, Any]],
        outputs: Sequence[Sequence[str]] | None = None,
    ) -> list[dict[str, np.ndarray] | pb_utils.TritonError]:
        """Run ``requests`` through one ``execute`` call, as a batch of the
        server's dynamic batcher; each gets its outputs or its error."""
        wanted = list(outputs) if outputs is not None else [()] * len(requests)
        calls = [
            RequestCall(as_request_arrays(r), tuple(o))
            for r, o in zip(requests, wanted, strict=True)
        ]
        batch = [
            pb_utils.InferenceRequest(
                inputs=[pb_utils.Tensor(n, a) for n, a in call.inputs.items()],
                requested_output_names=call.outputs,
            )
            for call in calls
        ]
        responses = self.model.execute(batch)
        if inspect.isawaitable(responses):
            responses = self._loop.run_until_complete(responses)
        if len(responses) != len(batch):
            raise pb_utils.TritonError(
                f"execute returned {len(responses)} responses for {len(batch)} requests"
            )
        return [
            self._answer(call, response) for call, response in zip(calls, responses, strict=True)
        ]

    def _answer(
        self, call: RequestCall, response: pb_utils.InferenceResponse
    ) -> dict[str, np.ndarray] | pb_utils.TritonError:
        error = response.error()
        if error is not None:
            return error
        arrays = {t.name(): t.as_numpy() for t in response.output_tensors()}
        result = checked_outputs(self.name, self.signature, self._batched, call, arrays)
        if isinstance(result, EngineRequestError):
            code = CODE_OF_STATUS.get(result.status, pb_utils.TritonError.INTERNAL)
            return pb_utils.TritonError(str(result), code)
        return result

    def _bls(
        self, request: pb_utils.InferenceRequest
    ) -> concurrent.futures.Future[pb_utils.InferenceResponse]:
        future: concurrent.futures.Future[pb_utils.InferenceResponse] = concurrent.futures.Future()
        fake = self._models.get(request.model_name())
        if fake is None:
            error = pb_utils.TritonError(
                f"model '{request.model_name()}' is not known", pb_utils.TritonError.NOT_FOUND
            )
            future.set_result(pb_utils.InferenceResponse(error=error))
            return future
        produced = fake({t.name(): t.as_numpy() for t in request.inputs()})
        names = request.requested_output_names() or list(produced)
        tensors = [pb_utils.Tensor(n, np.asarray(produced[n])) for n in names]
        future.set_result(pb_utils.InferenceResponse(tensors))
        return future

    def close(self) -> None:
        """Run ``finalize``. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            if hasattr(self.model, "finalize"):
                self.model.finalize()
        finally:
            pb_utils.set_bls_handler(None)
            self._loop.close()

    def __enter__(self) -> LoadedModel:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def load_model(
    directory: str | Path,
    version: int | None = None,
    *,
    models: Mapping[str, FakeModel] | None = None,
) -> LoadedModel:
    """Load and initialize the Python model in ``directory`` (a model
    directory of a repository: config.pbtxt and numbered versions);
    ``version`` None takes the one the version policy serves."""
    return LoadedModel(Path(directory), version, models or {})
