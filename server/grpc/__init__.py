"""The gRPC front end: KServe V2 / Triton's ``inference.GRPCInferenceService``
(``servicer``) and ``inferd.admin.v1.ModelAdmin`` (``admin``).

Protobuf and gRPC stop here: handlers turn messages into data plane calls
(``server.dataplane``) and domain values, and ``rpc.rpc`` turns every error
into a status in one place.
"""
