"""Python clients for inferd: numpy in, numpy out, sync and asyncio.

    from clients import InferenceClient
    with InferenceClient("127.0.0.1:8001") as client:
        result = client.infer("digits_mlp", {"pixels": pixels})
        result["probabilities"]

Never import this alongside ``tritonclient`` in one process: both register the
``inference.*`` protobuf symbols.
"""

from clients._codec import InferResult
from clients.aio import AsyncInferenceClient
from clients.errors import InferenceServerError
from clients.sync import InferenceClient

__all__ = ["AsyncInferenceClient", "InferResult", "InferenceClient", "InferenceServerError"]
