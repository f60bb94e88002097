"""Build the JSON schema the deploy tests check KServe manifests against.

KServe publishes no CRD schema on PyPI, and its SDK (``kserve``) cannot be
installed beside inferd (it pins protobuf < 7). The SDK wheel does ship the
OpenAPI-generated models for every CRD type (``kserve/models/*.py``), which
come from the same Go types as the CRDs: each class lists its fields
(``openapi_types``: Python name -> type, ``attribute_map``: Python name ->
JSON name), and its setters refuse None for required fields. This script
reads them from the wheel without importing anything and writes a JSON
schema (draft 2020-12) for ServingRuntime (serving.kserve.io/v1alpha1) and
InferenceService (serving.kserve.io/v1beta1):

- every KServe object is closed (``additionalProperties: false``), so a
  misspelt or misplaced field fails;
- Kubernetes types (V1Container, V1Probe, ...) point into kubernetes-validate's
  ``_definitions.json`` (``$id`` https://kubernetes.io/api/_definitions.json),
  so containers, probes and volumes inside KServe objects get the real
  Kubernetes schema; the test loads that file from the pinned version;
- a few value constraints the Python models cannot carry are added by hand
  (``EXTRA``: protocol versions, the canary percentage).

Regenerate (the wheel is only needed here, never by the tests)::

    pip download --no-deps -d /tmp/kserve kserve==0.21.0
    python tests/deploy/make_kserve_schema.py /tmp/kserve/kserve-0.21.0-py3-none-any.whl
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
import zipfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
K8S_DEFS = "https://kubernetes.io/api/_definitions.json"
ROOTS = {
    "ServingRuntime": ("serving.kserve.io/v1alpha1", "V1alpha1ServingRuntime"),
    "InferenceService": ("serving.kserve.io/v1beta1", "V1beta1InferenceService"),
}
#: Kubernetes client class names whose definition is not core/v1.
K8S_NAMES = {
    "V1ObjectMeta": "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
    "V1ListMeta": "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta",
    "V1Time": "io.k8s.apimachinery.pkg.apis.meta.v1.Time",
    "ResourceQuantity": "io.k8s.apimachinery.pkg.api.resource.Quantity",
    "K8sIoApiAppsV1DeploymentStrategy": "io.k8s.api.apps.v1.DeploymentStrategy",
    "K8sIoApiAutoscalingV2HorizontalPodAutoscalerBehavior": (
        "io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerBehavior"
    ),
}
#: Constraints from KServe's Go types and docs that the generated models lack.
PROTOCOLS = ["v1", "v2", "grpc-v1", "grpc-v2"]
EXTRA: dict[tuple[str, str], dict[str, Any]] = {
    ("V1alpha1ServingRuntimeSpec", "protocolVersions"): {"items": {"enum": PROTOCOLS}},
    ("V1beta1ModelSpec", "protocolVersion"): {"enum": PROTOCOLS},
    ("V1beta1PredictorSpec", "canaryTrafficPercent"): {"minimum": 0, "maximum": 100},
}


def read_models(wheel: Path) -> tuple[str, dict[str, dict[str, Any]]]:
    """{class name: {"types": {py: type}, "names": {py: json}, "required": [py]}}."""
    models: dict[str, dict[str, Any]] = {}
    version = ""
    with zipfile.ZipFile(wheel) as zf:
        for name in zf.namelist():
            if name.endswith(".dist-info/METADATA"):
                found = re.search(r"^Version: (\S+)", zf.read(name).decode(), re.M)
                version = found.group(1) if found else ""
            if not (name.startswith("kserve/models/") and name.endswith(".py")):
                continue
            source = zf.read(name).decode()
            for node in ast.parse(source).body:
                if isinstance(node, ast.ClassDef):
                    models[node.name] = _model(node, source)
    return version, models


def _model(node: ast.ClassDef, source: str) -> dict[str, Any]:
    types: dict[str, str] = {}
    names: dict[str, str] = {}
    for statement in node.body:
        if isinstance(statement, ast.Assign) and isinstance(statement.targets[0], ast.Name):
            if statement.targets[0].id == "openapi_types":
                types = ast.literal_eval(statement.value)
            elif statement.targets[0].id == "attribute_map":
                names = ast.literal_eval(statement.value)
    body = ast.get_source_segment(source, node) or ""
    required = re.findall(r"Invalid value for `(\w+)`, must not be `None`", body)
    return {"types": types, "names": names, "required": sorted(set(required))}


class Builder:
    def __init__(self, models: dict[str, dict[str, Any]], k8s_defs: dict[str, Any]) -> None:
        self.models = models
        self.k8s_defs = k8s_defs
        self.defs: dict[str, Any] = {}

    def k8s_ref(self, name: str) -> dict[str, Any]:
        target = K8S_NAMES.get(name)
        if target is None and name.startswith("V1"):
            target = f"io.k8s.api.core.v1.{name[2:]}"
        if target is None or target not in self.k8s_defs:
            # e.g. KEDA's trigger types: not Kubernetes, not KServe; left open.
            return {"description": f"{name}: not checked"}
        return {"$ref": f"{K8S_DEFS}#/$defs/{target}"}

    def type_schema(self, text: str) -> dict[str, Any]:
        text = text.strip()
        if text.startswith("list[") and text.endswith("]"):
            return {"type": "array", "items": self.type_schema(text[5:-1])}
        if text.startswith("dict(") and text.endswith(")"):
            _, value = text[5:-1].split(",", 1)
            return {"type": "object", "additionalProperties": self.type_schema(value)}
        simple = {
            "str": {"type": "string"},
            "int": {"type": "integer"},
            "float": {"type": "number"},
            "bool": {"type": "boolean"},
            "datetime": {"type": "string"},
            "object": {},
        }
        if text in simple:
            return dict(simple[text])
        if text in self.models:
            self.define(text)
            return {"$ref": f"#/$defs/{text}"}
        return self.k8s_ref(text)

    def define(self, name: str) -> None:
        if name in self.defs:
            return
        self.defs[name] = {}  # placeholder against recursion
        model = self.models[name]
        properties: dict[str, Any] = {}
        for py, typ in model["types"].items():
            key = model["names"][py]
            properties[key] = self.type_schema(typ) | EXTRA.get((name, key), {})
        schema: dict[str, Any] = {
            "type": "object",
            "properties": properties,
            "additionalProperties": False,
        }
        required = [model["names"][py] for py in model["required"]]
        if required:
            schema["required"] = required
        self.defs[name] = schema

    def root(self, kind: str, api_version: str, model: str) -> dict[str, Any]:
        self.define(model)
        schema = json.loads(json.dumps(self.defs[model]))
        schema["properties"]["apiVersion"] = {"const": api_version}
        schema["properties"]["kind"] = {"const": kind}
        schema["properties"].pop("status", None)  # manifests carry no status
        schema["required"] = sorted({"apiVersion", "kind", "metadata", "spec"})
        return schema


def build(wheel: Path, k8s_definitions: Path) -> dict[str, Any]:
    version, models = read_models(wheel)
    k8s = json.loads(k8s_definitions.read_text())
    builder = Builder(models, k8s["$defs"])
    kinds = {
        kind: builder.root(kind, api_version, model) for kind, (api_version, model) in ROOTS.items()
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://inferd.invalid/kserve.schema.json",
        "description": f"KServe {version} ServingRuntime and InferenceService, generated by "
        "tests/deploy/make_kserve_schema.py from the kserve SDK's models",
        "x-kserve-version": version,
        "x-kubernetes-definitions": k8s_definitions.parent.name,
        "kinds": {kind: {"$ref": f"#/$defs/{kind}"} for kind in kinds},
        "$defs": {**kinds, **dict(sorted(builder.defs.items()))},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("wheel", type=Path, help="kserve-<version>-py3-none-any.whl")
    parser.add_argument(
        "--k8s-definitions",
        type=Path,
        help="kubernetes-validate's _definitions.json (default: its newest strict set)",
    )
    parser.add_argument("-o", "--output", type=Path, default=HERE / "kserve.schema.json")
    args = parser.parse_args(argv)
    definitions = args.k8s_definitions
    if definitions is None:
        import kubernetes_validate.utils as kv

        base = Path(kv.__file__).parent / "kubernetes-json-schema"
        definitions = base / f"v{kv.latest_version()}-local-strict" / "_definitions.json"
    schema = build(args.wheel, definitions)
    args.output.write_text(json.dumps(schema, indent=1, sort_keys=False) + "\n")
    print(f"{args.output}: {len(schema['$defs'])} definitions", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
