"""The ceiling of unary Python gRPC on this machine: a bare grpc.aio server
whose ModelInfer only decodes the first input and answers a slice of it (no
model, no batching, no validation); ModelStreamInfer does the same for each
message of a stream, in turn. Benchmarks run it beside inferd so that
"served / bare" is measured in the same run.

    python -m benchmarks.bare_server --port 8005 [--engine thread --model PATH]

``--engine inline`` runs the ONNX model at PATH on the event loop for every
request, ``--engine thread`` on one engine thread of its own (one hand-off
there and one back, as a server that survives a hung engine must): the least
such a server can spend per request, with nothing else of a server around it.
"""

from __future__ import annotations

import argparse
import asyncio
import queue
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import numpy as np

from inferd.protos import grpc_service_pb2 as pb
from inferd.protos import grpc_service_pb2_grpc as pb_grpc
from inferd.protos import model_config_pb2
from inferd.server.grpc.malformed import add_servicer

Run = Callable[[np.ndarray], "asyncio.Future[np.ndarray] | np.ndarray"]


def onnx_runner(mode: str, path: str) -> Run:
    """``session.run`` on the loop (inline) or through one engine thread."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    if mode == "inline":
        return lambda x: session.run(None, {name: x})[0]
    jobs: queue.SimpleQueue[tuple[np.ndarray, asyncio.Future[np.ndarray]]] = queue.SimpleQueue()
    loop = asyncio.get_running_loop()

    def work() -> None:
        while True:
            x, future = jobs.get()
            out = session.run(None, {name: x})[0]
            loop.call_soon_threadsafe(future.set_result, out)

    threading.Thread(target=work, name="bare-engine", daemon=True).start()

    def post(x: np.ndarray) -> asyncio.Future[np.ndarray]:
        future: asyncio.Future[np.ndarray] = loop.create_future()
        jobs.put((x, future))
        return future

    return post


class BareServicer(pb_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    def __init__(self, run: Run | None = None) -> None:
        self.run = run

    async def ServerReady(self, request: Any, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=True)

    async def ServerLive(self, request: Any, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ModelReady(self, request: Any, context: Any) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=True)

    async def ServerMetadata(self, request: Any, context: Any) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name="bare", version="0")

    # perf_analyzer asks for these once before measuring; answer as digits_mlp.
    async def ModelMetadata(self, request: Any, context: Any) -> pb.ModelMetadataResponse:
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=request.name,
            versions=["1"],
            platform="onnxruntime_onnx",
            inputs=[tensor(name="pixels", datatype="FP32", shape=[-1, 64])],
            outputs=[tensor(name="probabilities", datatype="FP32", shape=[-1, 10])],
        )

    async def ModelConfig(self, request: Any, context: Any) -> pb.ModelConfigResponse:
        config = model_config_pb2.ModelConfig(
            name=request.name, platform="onnxruntime_onnx", max_batch_size=64
        )
        config.input.add(name="pixels", data_type=model_config_pb2.TYPE_FP32, dims=[64])
        config.output.add(name="probabilities", data_type=model_config_pb2.TYPE_FP32, dims=[10])
        return pb.ModelConfigResponse(config=config)

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: Any
    ) -> pb.ModelInferResponse:
        x = np.frombuffer(request.raw_input_contents[0], dtype=np.float32)
        if self.run is None:
            out = x[:10]
        else:
            answer = self.run(x.reshape(1, -1))
            out = await answer if isinstance(answer, asyncio.Future) else answer
        response = pb.ModelInferResponse(
            model_name=request.model_name, model_version="1", id=request.id
        )
        response.outputs.add(name="probabilities", datatype="FP32", shape=[1, out.size])
        response.raw_output_contents.append(out.tobytes())
        return response

    async def ModelStreamInfer(
        self, request_iterator: Any, context: Any
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        # The streaming ceiling: each message decoded and answered in turn.
        async for request in request_iterator:
            response = await self.ModelInfer(request, context)
            yield pb.ModelStreamInferResponse(infer_response=response)


async def serve(
    host: str, port: int, engine: str = "none", model: str = "", generic: bool = False
) -> None:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    run = None if engine == "none" else onnx_runner(engine, model)
    if generic:  # only the inference methods by name, as inferd registers them
        add_servicer(pb_grpc.add_GRPCInferenceServiceServicer_to_server, BareServicer(run), server)
    else:
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(BareServicer(run), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    print(f"bare server on {host}:{bound}", flush=True)
    await server.wait_for_termination()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8005)
    parser.add_argument("--engine", choices=("none", "inline", "thread"), default="none")
    parser.add_argument("--model", default="", help="the ONNX file --engine runs")
    parser.add_argument(
        "--generic", action="store_true",
        help="register only ModelInfer and ModelStreamInfer by name, the rest generic",
    )  # fmt: skip
    opts = parser.parse_args(argv)
    if opts.engine != "none" and not opts.model:
        parser.error("--engine needs --model")
    try:
        import uvloop

        uvloop.run(serve(opts.host, opts.port, opts.engine, opts.model, opts.generic))
    except ImportError:
        asyncio.run(serve(opts.host, opts.port, opts.engine, opts.model, opts.generic))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
