"""The KServe V2 HTTP/REST front end (Triton's extensions included) over the
data plane: ``routes`` the endpoints, ``tensors`` the JSON and binary tensor
codec, ``status`` the error mapping, ``openapi`` the served description,
``server`` the aiohttp server sharing gRPC's event loop (docs/http.md)."""

from inferd.server.http.server import HttpServer

__all__ = ["HttpServer"]
