"""Health, metadata, statistics and repository RPCs of
``GRPCInferenceService``: protobuf in, model manager and lifecycle calls,
protobuf out."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from inferd.protos import grpc_service_pb2 as pb
from inferd.protos.model_card import with_model_card
from inferd.server.about import EXTENSIONS, SERVER_NAME, SERVER_VERSION
from inferd.server.errors import FailedPrecondition, InvalidArgument
from inferd.server.grpc.rpc import rpc
from inferd.server.identity import current_principal
from inferd.server.stats import Duration, ModelStats

if TYPE_CHECKING:
    from inferd.server.dataplane import DataPlane
    from inferd.server.lifecycle.controller import LifecycleController
    from inferd.server.model_version import ModelVersion


def _duration(d: Duration) -> pb.StatisticDuration:
    return pb.StatisticDuration(count=d.count, ns=d.ns)


def statistics_pb(version: ModelVersion) -> pb.ModelStatistics:
    s: ModelStats = version.stats
    return pb.ModelStatistics(
        name=version.name,
        version=version.version_str,
        last_inference=s.last_inference_ms,
        inference_count=s.inference_count,
        execution_count=s.execution_count,
        inference_stats=pb.InferStatistics(
            success=_duration(s.success),
            fail=_duration(s.fail),
            queue=_duration(s.queue),
            compute_input=_duration(s.compute_input),
            compute_infer=_duration(s.compute_infer),
            compute_output=_duration(s.compute_output),
            cache_hit=_duration(s.cache_hit),
            cache_miss=_duration(s.cache_miss),
        ),
        batch_stats=[
            pb.InferBatchStatistics(
                batch_size=size,
                compute_input=_duration(b.compute_input),
                compute_infer=_duration(b.compute_infer),
                compute_output=_duration(b.compute_output),
            )
            for size, b in sorted(s.batches.items())
        ],
    )


class MetadataRpcs:
    """Mixed into ``InferenceServicer``, which sets these attributes."""

    dataplane: DataPlane
    lifecycle: LifecycleController | None

    @rpc
    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: Any
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    @rpc
    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: Any
    ) -> pb.ServerReadyResponse:
        plane = self.dataplane
        return pb.ServerReadyResponse(ready=not plane.draining and plane.models.server_ready)

    @rpc
    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: Any
    ) -> pb.ModelReadyResponse:
        plane = self.dataplane
        ready = not plane.draining and plane.models.is_ready(request.name, request.version)
        return pb.ModelReadyResponse(ready=ready)

    @rpc
    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: Any
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(
            name=SERVER_NAME, version=SERVER_VERSION, extensions=EXTENSIONS
        )

    @rpc
    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: Any
    ) -> pb.ModelMetadataResponse:
        version = self.dataplane.version(request.name, request.version)
        self.dataplane.authorize(version)
        tensor = pb.ModelMetadataResponse.TensorMetadata
        response = pb.ModelMetadataResponse(
            name=version.name,
            versions=[v.version_str for v in self.dataplane.models.versions(version.name)],
            platform=version.platform,
            inputs=[
                tensor(name=t.name, datatype=t.datatype, shape=t.shape)
                for t in version.io.inputs.values()
            ],
            outputs=[
                tensor(name=t.name, datatype=t.datatype, shape=t.shape)
                for t in version.io.outputs.values()
            ],
        )
        return with_model_card(response, version.card)

    @rpc
    async def ModelConfig(
        self, request: pb.ModelConfigRequest, context: Any
    ) -> pb.ModelConfigResponse:
        version = self.dataplane.version(request.name, request.version)
        self.dataplane.authorize(version)
        return pb.ModelConfigResponse(config=version.config)

    @rpc
    async def ModelStatistics(
        self, request: pb.ModelStatisticsRequest, context: Any
    ) -> pb.ModelStatisticsResponse:
        plane = self.dataplane
        models = plane.models
        if not request.name:
            if request.version:
                raise InvalidArgument("a version needs a model name")
            versions = models.loaded()
        elif request.version:
            versions = [models.resolve(request.name, request.version)]
        else:
            models.resolve(request.name)  # NOT_FOUND / UNAVAILABLE as for inference
            versions = models.versions(request.name)
        if request.name:
            for v in versions:
                plane.authorize(v)
        else:
            versions = [v for v in versions if plane.allowed(v)]
        return pb.ModelStatisticsResponse(model_stats=[statistics_pb(v) for v in versions])

    @rpc
    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: Any
    ) -> pb.RepositoryIndexResponse:
        if request.repository_name:
            raise InvalidArgument(
                "this server has a single model repository; leave repository_name empty"
            )
        index = pb.RepositoryIndexResponse.ModelIndex
        return pb.RepositoryIndexResponse(
            models=[
                index(name=n, version=v, state=s, reason=r)
                for n, v, s, r in self.dataplane.models.index(ready_only=request.ready)
            ]
        )

    def _repository_request(
        self, repository_name: str, model_name: str, parameters: Any, what: str
    ) -> LifecycleController:
        if repository_name:
            raise InvalidArgument(
                "this server has a single model repository; leave repository_name empty"
            )
        if not model_name:
            raise InvalidArgument("model_name is required")
        if parameters:
            names = ", ".join(repr(k[:40]) for k in sorted(parameters))
            raise InvalidArgument(f"{what} parameters are not supported (got {names})")
        if self.lifecycle is None:
            raise FailedPrecondition("this server does not load or unload models on request")
        return self.lifecycle

    @rpc
    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: Any
    ) -> pb.RepositoryModelLoadResponse:
        """Load or reload a model (explicit model control mode). New or changed
        versions warm up beside the serving ones, then take over; a failure
        is reported and leaves what serves untouched."""
        lifecycle = self._repository_request(
            request.repository_name, request.model_name, request.parameters, "load"
        )
        await lifecycle.load_model(request.model_name, principal=current_principal().name)
        return pb.RepositoryModelLoadResponse()

    @rpc
    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: Any
    ) -> pb.RepositoryModelUnloadResponse:
        """Unload every version of a model once its admitted requests finish."""
        # Triton's unload_dependents is accepted and ignored: ensembles stay loaded
        # and fail at the missing step until it is back (Triton's default).
        parameters = {k: v for k, v in request.parameters.items() if k != "unload_dependents"}
        lifecycle = self._repository_request(
            request.repository_name, request.model_name, parameters, "unload"
        )
        await lifecycle.unload_model(request.model_name, principal=current_principal().name)
        return pb.RepositoryModelUnloadResponse()
