from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RouteMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROUTE_MODE_UNSPECIFIED: _ClassVar[RouteMode]
    ROUTE_MODE_CANARY: _ClassVar[RouteMode]
    ROUTE_MODE_SHADOW: _ClassVar[RouteMode]
    ROUTE_MODE_AB: _ClassVar[RouteMode]
    ROUTE_MODE_BLUE_GREEN: _ClassVar[RouteMode]

class Stage(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STAGE_UNSPECIFIED: _ClassVar[Stage]
    STAGE_DEVELOPMENT: _ClassVar[Stage]
    STAGE_STAGING: _ClassVar[Stage]
    STAGE_PRODUCTION: _ClassVar[Stage]
    STAGE_SHADOW: _ClassVar[Stage]
    STAGE_ARCHIVED: _ClassVar[Stage]
ROUTE_MODE_UNSPECIFIED: RouteMode
ROUTE_MODE_CANARY: RouteMode
ROUTE_MODE_SHADOW: RouteMode
ROUTE_MODE_AB: RouteMode
ROUTE_MODE_BLUE_GREEN: RouteMode
STAGE_UNSPECIFIED: Stage
STAGE_DEVELOPMENT: Stage
STAGE_STAGING: Stage
STAGE_PRODUCTION: Stage
STAGE_SHADOW: Stage
STAGE_ARCHIVED: Stage

class Guardrails(_message.Message):
    __slots__ = ("window_seconds", "min_requests", "max_error_ratio", "max_p99_ms", "max_disagreement_ratio")
    WINDOW_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MIN_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    MAX_ERROR_RATIO_FIELD_NUMBER: _ClassVar[int]
    MAX_P99_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_DISAGREEMENT_RATIO_FIELD_NUMBER: _ClassVar[int]
    window_seconds: float
    min_requests: int
    max_error_ratio: float
    max_p99_ms: float
    max_disagreement_ratio: float
    def __init__(self, window_seconds: _Optional[float] = ..., min_requests: _Optional[int] = ..., max_error_ratio: _Optional[float] = ..., max_p99_ms: _Optional[float] = ..., max_disagreement_ratio: _Optional[float] = ...) -> None: ...

class VersionStage(_message.Message):
    __slots__ = ("version", "stage", "ready")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    version: int
    stage: Stage
    ready: bool
    def __init__(self, version: _Optional[int] = ..., stage: _Optional[_Union[Stage, str]] = ..., ready: bool = ...) -> None: ...

class VariantStats(_message.Message):
    __slots__ = ("variant", "version", "requests", "errors", "traffic_share", "window_requests", "window_error_ratio", "window_p50_ms", "window_p99_ms", "shadow_requests", "shadow_errors", "shadow_disagreements", "shadow_dropped", "window_disagreement_ratio")
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    TRAFFIC_SHARE_FIELD_NUMBER: _ClassVar[int]
    WINDOW_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_ERROR_RATIO_FIELD_NUMBER: _ClassVar[int]
    WINDOW_P50_MS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_P99_MS_FIELD_NUMBER: _ClassVar[int]
    SHADOW_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    SHADOW_ERRORS_FIELD_NUMBER: _ClassVar[int]
    SHADOW_DISAGREEMENTS_FIELD_NUMBER: _ClassVar[int]
    SHADOW_DROPPED_FIELD_NUMBER: _ClassVar[int]
    WINDOW_DISAGREEMENT_RATIO_FIELD_NUMBER: _ClassVar[int]
    variant: str
    version: int
    requests: int
    errors: int
    traffic_share: float
    window_requests: int
    window_error_ratio: float
    window_p50_ms: float
    window_p99_ms: float
    shadow_requests: int
    shadow_errors: int
    shadow_disagreements: int
    shadow_dropped: int
    window_disagreement_ratio: float
    def __init__(self, variant: _Optional[str] = ..., version: _Optional[int] = ..., requests: _Optional[int] = ..., errors: _Optional[int] = ..., traffic_share: _Optional[float] = ..., window_requests: _Optional[int] = ..., window_error_ratio: _Optional[float] = ..., window_p50_ms: _Optional[float] = ..., window_p99_ms: _Optional[float] = ..., shadow_requests: _Optional[int] = ..., shadow_errors: _Optional[int] = ..., shadow_disagreements: _Optional[int] = ..., shadow_dropped: _Optional[int] = ..., window_disagreement_ratio: _Optional[float] = ...) -> None: ...

class Route(_message.Message):
    __slots__ = ("model", "champion", "challenger", "mode", "weight", "guardrails", "previous_champions", "stages", "revision", "stats", "serving", "tripped")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CHAMPION_FIELD_NUMBER: _ClassVar[int]
    CHALLENGER_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    GUARDRAILS_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_CHAMPIONS_FIELD_NUMBER: _ClassVar[int]
    STAGES_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    SERVING_FIELD_NUMBER: _ClassVar[int]
    TRIPPED_FIELD_NUMBER: _ClassVar[int]
    model: str
    champion: int
    challenger: int
    mode: RouteMode
    weight: float
    guardrails: Guardrails
    previous_champions: _containers.RepeatedScalarFieldContainer[int]
    stages: _containers.RepeatedCompositeFieldContainer[VersionStage]
    revision: int
    stats: _containers.RepeatedCompositeFieldContainer[VariantStats]
    serving: int
    tripped: str
    def __init__(self, model: _Optional[str] = ..., champion: _Optional[int] = ..., challenger: _Optional[int] = ..., mode: _Optional[_Union[RouteMode, str]] = ..., weight: _Optional[float] = ..., guardrails: _Optional[_Union[Guardrails, _Mapping]] = ..., previous_champions: _Optional[_Iterable[int]] = ..., stages: _Optional[_Iterable[_Union[VersionStage, _Mapping]]] = ..., revision: _Optional[int] = ..., stats: _Optional[_Iterable[_Union[VariantStats, _Mapping]]] = ..., serving: _Optional[int] = ..., tripped: _Optional[str] = ...) -> None: ...

class GetRoutesRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class GetRoutesResponse(_message.Message):
    __slots__ = ("routes",)
    ROUTES_FIELD_NUMBER: _ClassVar[int]
    routes: _containers.RepeatedCompositeFieldContainer[Route]
    def __init__(self, routes: _Optional[_Iterable[_Union[Route, _Mapping]]] = ...) -> None: ...

class SetRouteRequest(_message.Message):
    __slots__ = ("model", "challenger", "mode", "weight", "guardrails", "reason")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CHALLENGER_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    GUARDRAILS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    model: str
    challenger: int
    mode: RouteMode
    weight: float
    guardrails: Guardrails
    reason: str
    def __init__(self, model: _Optional[str] = ..., challenger: _Optional[int] = ..., mode: _Optional[_Union[RouteMode, str]] = ..., weight: _Optional[float] = ..., guardrails: _Optional[_Union[Guardrails, _Mapping]] = ..., reason: _Optional[str] = ...) -> None: ...

class SetStageRequest(_message.Message):
    __slots__ = ("model", "version", "stage", "reason")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    stage: Stage
    reason: str
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., stage: _Optional[_Union[Stage, str]] = ..., reason: _Optional[str] = ...) -> None: ...

class PromoteRequest(_message.Message):
    __slots__ = ("model", "version", "reason")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    reason: str
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class RollbackRequest(_message.Message):
    __slots__ = ("model", "reason")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    model: str
    reason: str
    def __init__(self, model: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RouteResponse(_message.Message):
    __slots__ = ("route",)
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    route: Route
    def __init__(self, route: _Optional[_Union[Route, _Mapping]] = ...) -> None: ...

class GetAuditLogRequest(_message.Message):
    __slots__ = ("model", "limit")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    model: str
    limit: int
    def __init__(self, model: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class AuditEntry(_message.Message):
    __slots__ = ("id", "time", "principal", "action", "model", "before_json", "after_json", "reason", "replica")
    ID_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    BEFORE_JSON_FIELD_NUMBER: _ClassVar[int]
    AFTER_JSON_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    id: int
    time: _timestamp_pb2.Timestamp
    principal: str
    action: str
    model: str
    before_json: str
    after_json: str
    reason: str
    replica: str
    def __init__(self, id: _Optional[int] = ..., time: _Optional[_Union[_timestamp_pb2.Timestamp, _Mapping]] = ..., principal: _Optional[str] = ..., action: _Optional[str] = ..., model: _Optional[str] = ..., before_json: _Optional[str] = ..., after_json: _Optional[str] = ..., reason: _Optional[str] = ..., replica: _Optional[str] = ...) -> None: ...

class GetAuditLogResponse(_message.Message):
    __slots__ = ("entries",)
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[AuditEntry]
    def __init__(self, entries: _Optional[_Iterable[_Union[AuditEntry, _Mapping]]] = ...) -> None: ...

class GetDriftRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class TensorDrift(_message.Message):
    __slots__ = ("model", "version", "tensor", "psi", "js_distance", "window_rows", "reference_rows", "reference_source")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TENSOR_FIELD_NUMBER: _ClassVar[int]
    PSI_FIELD_NUMBER: _ClassVar[int]
    JS_DISTANCE_FIELD_NUMBER: _ClassVar[int]
    WINDOW_ROWS_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_ROWS_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_SOURCE_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    tensor: str
    psi: float
    js_distance: float
    window_rows: int
    reference_rows: int
    reference_source: str
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., tensor: _Optional[str] = ..., psi: _Optional[float] = ..., js_distance: _Optional[float] = ..., window_rows: _Optional[int] = ..., reference_rows: _Optional[int] = ..., reference_source: _Optional[str] = ...) -> None: ...

class GetDriftResponse(_message.Message):
    __slots__ = ("tensors", "psi_threshold", "monitoring")
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    PSI_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    MONITORING_FIELD_NUMBER: _ClassVar[int]
    tensors: _containers.RepeatedCompositeFieldContainer[TensorDrift]
    psi_threshold: float
    monitoring: bool
    def __init__(self, tensors: _Optional[_Iterable[_Union[TensorDrift, _Mapping]]] = ..., psi_threshold: _Optional[float] = ..., monitoring: bool = ...) -> None: ...
