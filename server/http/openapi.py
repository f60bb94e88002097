"""The OpenAPI 3 description of the REST endpoints, served at ``/v2/openapi.json``.

Built from ``routes.ROUTES``, the table the server registers, so the document
and the server cannot list different endpoints.
"""

from __future__ import annotations

import re
from typing import Any

from inferd.server.about import SERVER_NAME, SERVER_VERSION
from inferd.server.http.routes import ROUTES

PATH = "/v2/openapi.json"

_ERROR = {
    "description": "error",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {"error": {"type": "string"}},
                "required": ["error"],
            }
        }
    },
}
_JSON_OK = {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}}
_INFER_BODY = {
    "description": "A JSON inference request; with Inference-Header-Content-Length, the JSON "
    "is followed by the inputs' binary data (Triton's binary tensor extension).",
    "content": {
        "application/json": {"schema": {"type": "object"}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    },
}


def document() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        operation: dict[str, Any] = {
            "summary": route.summary,
            "operationId": f"{route.handler}:{route.path}",
            "responses": {"200": _JSON_OK, "default": _ERROR},
        }
        parameters = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in re.findall(r"{(\w+)}", route.path)
        ]
        if route.handler == "infer":
            operation["requestBody"] = _INFER_BODY
            parameters.append(
                {
                    "name": "Inference-Header-Content-Length",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "integer", "minimum": 1},
                }
            )
        if parameters:
            operation["parameters"] = parameters
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    paths[PATH] = {
        "get": {
            "summary": "this document",
            "operationId": "openapi",
            "responses": {"200": _JSON_OK},
        }
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": f"{SERVER_NAME} KServe V2 REST API",
            "version": SERVER_VERSION,
            "description": "The Open Inference Protocol over HTTP with Triton's extensions "
            "(binary tensor data, classification, statistics, model configuration, model "
            'repository). Errors answer {"error": "..."}.',
        },
        "paths": paths,
    }
