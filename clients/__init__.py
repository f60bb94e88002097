"""Python clients for inferd: numpy in, numpy out, sync and asyncio.

    from inferd.clients import InferenceClient
    with InferenceClient("127.0.0.1:8001") as client:
        result = client.infer("digits_mlp", {"pixels": pixels})
        result["probabilities"]

Across replicas: ``InferenceClient(target, load_balancing="round_robin",
retry=RetryPolicy())`` (see ``clients.balancing``).

Never import this alongside ``tritonclient`` in one process: both register the
``inference.*`` protobuf symbols.
"""

from inferd.clients._codec import InferResult
from inferd.clients.aio import AsyncInferenceClient
from inferd.clients.balancing import RetryPolicy
from inferd.clients.errors import InferenceServerError
from inferd.clients.sync import InferenceClient

__all__ = [
    "AsyncInferenceClient",
    "InferResult",
    "InferenceClient",
    "InferenceServerError",
    "RetryPolicy",
]
