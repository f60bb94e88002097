"""The HTTP/REST front end's server: aiohttp on the gRPC server's event loop.

One middleware does, in order, what gRPC's transport and interceptors do:
refuses a body over ``max_message_bytes`` from its Content-Length before
reading it (aiohttp's own limit stops a chunked or compressed body at the same
size while it is read), authenticates the caller and checks the role of the
endpoint's gRPC twin (one policy table for both), sets the principal, takes a
slot of the server's ``AdmissionLimits`` (shared with gRPC; the twin says
whether the route counts) and charges an inference body to the request-bytes
budget (429, as gRPC's RESOURCE_EXHAUSTED), and turns every error into
``{"error": ...}`` with its status (``http.status``).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import TYPE_CHECKING

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from inferd.server.admission_limits import UNCOUNTED, AdmissionLimits
from inferd.server.auth.certificate_roles import Identity, peercert_identities
from inferd.server.auth.gate import AuthGate
from inferd.server.http import openapi
from inferd.server.http.routes import ROUTES, HttpEndpoints
from inferd.server.http.status import error_response, response_for
from inferd.server.identity import ANONYMOUS, Principal, reset_principal, set_principal
from inferd.server.tls import CertificateFiles

if TYPE_CHECKING:
    from inferd.server.codec import RequestLimits
    from inferd.server.dataplane import DataPlane
    from inferd.server.lifecycle.controller import LifecycleController

log = logging.getLogger("inferd.http")

#: The twin whose body is charged to the request-bytes budget.
_INFER = "/inference.GRPCInferenceService/ModelInfer"
#: Key of the route's gRPC twin in aiohttp's per-route info.
_TWIN = web.AppKey("inferd_twins", dict)
#: What a connection still open at shutdown gets to finish, seconds.
SHUTDOWN_TIMEOUT_S = 0.5


def ssl_context(certificates: CertificateFiles) -> ssl.SSLContext:
    """The gRPC port's certificate (and client CA for mutual TLS) for HTTPS."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificates.cert, certificates.key)
    if certificates.client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(certificates.client_ca)
    return context


class HttpServer:
    def __init__(
        self,
        dataplane: DataPlane,
        *,
        lifecycle: LifecycleController | None,
        limits: RequestLimits,
        max_body_bytes: int,
        gate: AuthGate | None = None,
        certificates: CertificateFiles | None = None,
        admission: AdmissionLimits | None = None,
    ) -> None:
        self.endpoints = HttpEndpoints(dataplane, lifecycle=lifecycle, limits=limits)
        self.max_body_bytes = max_body_bytes
        #: Who may call what, as for gRPC (None: everything open, for embedding code).
        self.gate = gate
        self.certificates = certificates
        #: The server's concurrent-call limit and bytes budget, shared with
        #: gRPC (None: no limit, for embedding code).
        self.admission = admission
        self._ssl = ssl_context(certificates) if certificates is not None else None
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.app = self._build()

    def _build(self) -> web.Application:
        # The body limit is also aiohttp's own, which applies while a chunked
        # or compressed body is read (the middleware checks Content-Length first).
        app = web.Application(client_max_size=self.max_body_bytes, middlewares=[self._middleware])
        twins: dict[str, str] = {}
        # Fixed paths first: /v2/models/stats before /v2/models/{model}.
        for route in sorted(ROUTES, key=lambda r: "{" in r.path):
            handler = getattr(self.endpoints, route.handler)
            app.router.add_route(route.method, route.path, handler)
            twins[f"{route.method} {route.path}"] = route.twin
        app[_TWIN] = twins
        spec = orjson.dumps(openapi.document())

        async def serve_openapi(request: web.Request) -> web.Response:
            return web.Response(body=spec, content_type="application/json")

        app.router.add_get(openapi.PATH, serve_openapi)
        return app

    def _twin(self, request: web.Request) -> str | None:
        route = request.match_info.route
        resource = route.resource
        if resource is None:
            return None
        twins: dict[str, str] = request.app[_TWIN]
        return twins.get(f"{route.method} {resource.canonical}")

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        length = request.content_length
        if length is not None and length > self.max_body_bytes:
            return error_response(
                413,
                f"request body of {length} bytes is over the limit of {self.max_body_bytes} bytes",
            )
        token = None
        counted: AdmissionLimits | None = None  # the limits this call took a slot of
        held = 0
        try:
            twin = self._twin(request)
            if twin is not None:
                token = set_principal(self._admit(request, twin))
                admission = self.admission
                if admission is not None and twin not in UNCOUNTED:
                    refused = admission.admit()
                    if refused is not None:
                        return error_response(429, refused)
                    counted = admission
                    if twin == _INFER:
                        # Charged before the body is read; a chunked one once read.
                        size = length if length is not None else len(await request.read())
                        if not admission.request_bytes.hold(size):
                            return error_response(429, admission.request_bytes.reason)
                        held = size
            return await handler(request)
        except web.HTTPRequestEntityTooLarge:
            return error_response(
                413, f"request body is over the limit of {self.max_body_bytes} bytes"
            )
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = error_response(exc.status, exc.reason)
            if "Allow" in exc.headers:  # 405 names the methods the path takes
                response.headers["Allow"] = exc.headers["Allow"]
            return response
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # domain errors and the unexpected alike
            return response_for(exc)
        finally:
            if counted is not None:
                counted.release()
                if held:
                    counted.request_bytes.release(held)
            if token is not None:
                reset_principal(token)

    def _admit(self, request: web.Request, twin: str) -> Principal:
        if self.gate is None:
            return ANONYMOUS
        values = request.headers.getall("Authorization", [])
        return self.gate.admit(
            twin, [("authorization", v) for v in values], lambda: self._peer(request)
        )

    def _peer(self, request: web.Request) -> list[Identity]:
        """Mutual TLS: the client certificate's identities, as for gRPC."""
        if self.certificates is None or not self.certificates.mutual:
            return []
        transport = request.transport
        return peercert_identities(
            transport.get_extra_info("peercert") if transport is not None else None
        )

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> int:
        """Listen; returns the bound port. Raises OSError when it cannot."""
        runner = web.AppRunner(
            self.app, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT_S
        )
        await runner.setup()
        site = web.TCPSite(
            runner,
            host,
            port,
            ssl_context=self._ssl,
            reuse_port=reuse_port or None,
        )
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        addresses = runner.addresses
        self.port = int(addresses[0][1]) if addresses else port
        return self.port

    def reload_tls(self) -> None:
        """Re-read the certificate for new connections (SIGHUP)."""
        if self._ssl is not None and self.certificates is not None:
            try:
                self._ssl.load_cert_chain(self.certificates.cert, self.certificates.key)
            except (OSError, ssl.SSLError) as exc:
                log.error("HTTPS certificate not reloaded, the current one stays: %s", exc)

    async def stop(self) -> None:
        """Stop accepting, give open requests a moment, close connections."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
