"""deploy/: every manifest validates against the Kubernetes (and KServe) schemas.

- Core kinds: kubernetes-validate's strict JSON schemas (no unknown fields) at
  the oldest and newest Kubernetes versions we claim (``K8S_VERSIONS``).
- KServe kinds: ``kserve.schema.json``, generated from the kserve SDK's
  models by ``make_kserve_schema.py``, with the Kubernetes types inside them
  resolved against kubernetes-validate's definitions.
- Kustomize: base and every overlay rendered (``kustomize build`` or
  ``kubectl kustomize``), and each rendered object validated; the base files
  are also validated one by one.
- Then what the schemas cannot say: the server flags exist (parsed with the
  real ``inferd serve`` parser), probes hit grpc.health.v1 on the gRPC port,
  the termination grace outlasts the drain, the HPA's metric is the one the
  adapter rule serves and the server exports, and so on.
"""

from __future__ import annotations

import copy
import json
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jsonschema
import kubernetes_validate
import pytest
import referencing
import yaml
from kubernetes_validate.utils import schema_contents

if TYPE_CHECKING:
    from inferd.server.settings import ServerConfig

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
KSERVE = DEPLOY / "kserve"
HERE = Path(__file__).resolve().parent

#: Oldest version we claim (native gRPC probes are GA from 1.27) and the
#: newest that kubernetes-validate ships.
K8S_VERSIONS = ("1.27.0", "1.37.0")
KSERVE_KINDS = ("ServingRuntime", "InferenceService")
OVERLAYS = ("base", "overlays/gpu", "overlays/gitops-routes")
#: Files that are not whole objects (kustomize files, patches).
PARTIAL = {"kustomization.yaml", "deployment-gpu.yaml", "hpa-gpu.yaml", "state-from-configmap.yaml"}


def load_yaml(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def manifest_files() -> list[Path]:
    # deploy/observability holds Prometheus rules and a dashboard, not objects.
    found = [*K8S.rglob("*.yaml"), *KSERVE.rglob("*.yaml")]
    return sorted(p for p in found if p.name not in PARTIAL)


# --- validators ---------------------------------------------------------------------------


def validate_k8s(obj: dict[str, Any], version: str) -> None:
    kubernetes_validate.validate(obj, version, strict=True)


@cache
def _kserve_validators() -> dict[str, jsonschema.protocols.Validator]:
    schema = json.loads((HERE / "kserve.schema.json").read_text())
    # The Kubernetes definitions the generator resolved names against.
    k8s_dir = schema["x-kubernetes-definitions"]
    k8s_defs = schema_contents(f"kubernetes-json-schema/{k8s_dir}/_definitions.json", k8s_dir)
    registry: referencing.Registry[Any] = referencing.Registry().with_resources(
        [
            (schema["$id"], referencing.Resource.from_contents(schema)),
            (k8s_defs["$id"], referencing.Resource.from_contents(k8s_defs)),
        ]
    )
    validators = {}
    for kind in KSERVE_KINDS:
        root = {"$ref": f"{schema['$id']}#/$defs/{kind}"}
        validators[kind] = jsonschema.Draft202012Validator(root, registry=registry)
    return validators


def validate_kserve(obj: dict[str, Any]) -> None:
    _kserve_validators()[obj["kind"]].validate(obj)


def validate_any(obj: dict[str, Any]) -> None:
    if obj["kind"] in KSERVE_KINDS:
        validate_kserve(obj)
    else:
        for version in K8S_VERSIONS:
            validate_k8s(obj, version)


def _kustomize_command() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


@cache
def rendered(overlay: str) -> tuple[dict[str, Any], ...]:
    command = _kustomize_command()
    if command is None:
        pytest.skip("neither kustomize nor kubectl is installed: overlays not rendered")
    out = subprocess.run(
        [*command, str(K8S / overlay)], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    return tuple(doc for doc in yaml.safe_load_all(out.stdout) if doc)


def by_kind(objects: Iterator[dict[str, Any]] | tuple[dict[str, Any], ...]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for obj in objects:
        found.setdefault(obj["kind"], []).append(obj)
    return found


def serve_args(container: dict[str, Any]) -> ServerConfig:
    """A container's ``inferd serve`` command line as the server's checked
    settings (no environment), with no deprecated flag spelling."""
    from inferd.server.settings import SettingsError, parse_serve_settings

    assert container["command"] == ["inferd"]
    assert container["args"][0] == "serve"
    line = " ".join(container["args"])
    try:
        settings = parse_serve_settings(container["args"][1:])
        config = settings.to_config()
    except SystemExit:  # argparse reports unknown flags by exiting
        pytest.fail(f"`inferd {line}` does not parse (unknown flag?)")
    except SettingsError as exc:
        pytest.fail(f"`inferd {line}`: {exc}")
    assert not settings.deprecations(), settings.deprecations()
    return config


# --- schemas ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_manifest_file_validates(path: Path) -> None:
    objects = load_yaml(path)
    assert objects, f"{path} holds no object"
    for obj in objects:
        validate_any(obj)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kustomize_renders_and_every_object_validates(overlay: str) -> None:
    objects = rendered(overlay)
    kinds = by_kind(objects)
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"} <= set(kinds)
    for obj in objects:
        validate_any(obj)


def test_strict_schemas_reject_what_they_should() -> None:
    """The validators are live: an unknown field, a wrong type, a field newer
    than the version, a misplaced KServe field all fail."""
    deployment = load_yaml(K8S / "base" / "deployment.yaml")[0]
    typo = copy.deepcopy(deployment)
    typo["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpc"]["prot"] = 8001
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_k8s(typo, K8S_VERSIONS[-1])
    wrong = copy.deepcopy(deployment)
    wrong["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = "45"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_k8s(wrong, K8S_VERSIONS[-1])
    newer = copy.deepcopy(deployment)
    container = newer["spec"]["template"]["spec"]["containers"][0]
    container["lifecycle"]["preStop"] = {"sleep": {"seconds": 5}}  # Kubernetes 1.29+
    validate_k8s(newer, K8S_VERSIONS[-1])
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_k8s(newer, K8S_VERSIONS[0])

    runtime = load_yaml(KSERVE / "servingruntime.yaml")[0]
    bad = copy.deepcopy(runtime)
    bad["spec"]["supportedModelFormat"] = bad["spec"].pop("supportedModelFormats")
    with pytest.raises(jsonschema.ValidationError):
        validate_kserve(bad)
    bad = copy.deepcopy(runtime)
    bad["spec"]["protocolVersions"] = ["grpc-v3"]
    with pytest.raises(jsonschema.ValidationError):
        validate_kserve(bad)
    bad = copy.deepcopy(runtime)
    del bad["spec"]["containers"]  # required
    with pytest.raises(jsonschema.ValidationError):
        validate_kserve(bad)
    bad = copy.deepcopy(runtime)  # a Kubernetes type inside a KServe object
    bad["spec"]["containers"][0]["readinessProbe"]["grpc"]["port"] = "8001"
    with pytest.raises(jsonschema.ValidationError):
        validate_kserve(bad)
    service = load_yaml(KSERVE / "inferenceservice-canary.yaml")[0]
    bad = copy.deepcopy(service)
    bad["spec"]["predictor"]["canaryTrafficPercent"] = 110
    with pytest.raises(jsonschema.ValidationError):
        validate_kserve(bad)
    bad = copy.deepcopy(service)
    bad["spec"]["predictor"]["model"]["canaryTrafficPercent"] = 10  # wrong level
    with pytest.raises(jsonschema.ValidationError):
        validate_kserve(bad)


# --- what the schemas cannot say ----------------------------------------------------------


def _deployment(objects: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    (deployment,) = by_kind(objects)["Deployment"]
    return deployment


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def test_deployment_runs_hardened_with_grpc_probes_and_a_long_enough_grace() -> None:
    deployment = _deployment(rendered("base"))
    pod = deployment["spec"]["template"]["spec"]
    container = _container(deployment)
    opts = serve_args(container)
    assert opts.host == "0.0.0.0"

    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind])

    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["grpc"] == opts.grpc_port == 8001
    assert ports["http"] == opts.http_port == 8000 and opts.allow_http
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"] == {"port": opts.grpc_port, "service": ""}, probe
    liveness = container["livenessProbe"]
    assert liveness["periodSeconds"] * liveness["failureThreshold"] > opts.grace_s

    # The kubelet's grace covers the preStop pause, then the whole drain.
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] > float(pre_stop[1]) + opts.grace_s

    # Load spreading: connections age out; graced calls fit in the drain budget.
    assert opts.max_connection_age_s and opts.max_connection_age_grace_s is not None

    # Prometheus scrapes the port the server serves metrics on.
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == opts.metrics_port == ports["metrics"]


def test_volumes_models_read_only_state_shared_and_writable_paths() -> None:
    objects = rendered("base")
    deployment = _deployment(objects)
    container = _container(deployment)
    opts = serve_args(container)
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    claims = {c["metadata"]["name"]: c for c in by_kind(objects)["PersistentVolumeClaim"]}

    models = mounts[str(opts.model_repository)]
    assert models.get("readOnly") is True
    models_volume = volumes[models["name"]]["persistentVolumeClaim"]
    assert models_volume["readOnly"] is True
    assert claims[models_volume["claimName"]]["spec"]["accessModes"] == ["ReadOnlyMany"]

    state = mounts[str(opts.state_dir)]
    state_claim = volumes[state["name"]]["persistentVolumeClaim"]["claimName"]
    assert claims[state_claim]["spec"]["accessModes"] == ["ReadWriteMany"]
    assert not state.get("readOnly")

    # Read-only root: everything the server writes is a volume.
    for path in ("/tmp", str(opts.audit_dir)):
        assert path in mounts and not mounts[path].get("readOnly"), path
    assert str(opts.audit_dir) != str(opts.state_dir)  # SQLite stays off the shared FS


def test_services_name_the_h2c_port_and_one_is_headless() -> None:
    objects = rendered("base")
    services = {s["metadata"]["name"]: s for s in by_kind(objects)["Service"]}
    labels = _deployment(objects)["spec"]["template"]["metadata"]["labels"]
    assert services["inferd-headless"]["spec"]["clusterIP"] == "None"
    for service in services.values():
        assert set(service["spec"]["selector"].items()) <= set(labels.items())
        grpc_ports = [p for p in service["spec"]["ports"] if p["name"] == "grpc"]
        assert grpc_ports and grpc_ports[0]["appProtocol"] == "kubernetes.io/h2c"
        assert grpc_ports[0]["port"] == 8001
    http_ports = [p for p in services["inferd"]["spec"]["ports"] if p["name"] == "http"]
    assert [(p["port"], p["targetPort"]) for p in http_ports] == [(8000, "http")]


def _adapter_metric() -> str:
    (config_map,) = load_yaml(K8S / "prometheus-adapter" / "rules.yaml")
    (rule,) = yaml.safe_load(config_map["data"]["config.yaml"])["rules"]
    assert rule["seriesQuery"].startswith(rule["name"]["matches"].strip("^$") + "{")
    assert {"namespace", "pod"} <= set(rule["resources"]["overrides"])
    return str(rule["name"]["as"])


@pytest.mark.parametrize("overlay", ["base", "overlays/gpu"])
def test_hpa_scales_on_pending_requests_with_cpu_beside_it(overlay: str) -> None:
    objects = rendered(overlay)
    (hpa,) = by_kind(objects)["HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == (
        "Deployment",
        _deployment(objects)["metadata"]["name"],
    )
    metrics = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert metrics["Pods"]["pods"]["metric"]["name"] == _adapter_metric()
    assert metrics["Pods"]["pods"]["target"]["type"] == "AverageValue"
    assert metrics["Resource"]["resource"]["name"] == "cpu"
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


def test_the_autoscaling_metric_is_one_the_server_exports() -> None:
    metrics = ROOT / "server" / "telemetry" / "metrics.py"
    if not metrics.exists():
        pytest.skip("server/telemetry (the observability work) is not in this tree")
    assert f'"{_adapter_metric()}"' in metrics.read_text()


def test_pdb_covers_the_pods() -> None:
    objects = rendered("base")
    (pdb,) = by_kind(objects)["PodDisruptionBudget"]
    labels = _deployment(objects)["spec"]["template"]["metadata"]["labels"]
    assert set(pdb["spec"]["selector"]["matchLabels"].items()) <= set(labels.items())
    assert pdb["spec"]["maxUnavailable"] == 1


def test_gpu_overlay_asks_for_a_gpu_and_runs_the_gpu_image() -> None:
    deployment = _deployment(rendered("overlays/gpu"))
    container = _container(deployment)
    assert container["image"].endswith(":gpu")
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    tolerations = deployment["spec"]["template"]["spec"]["tolerations"]
    assert any(t["key"] == "nvidia.com/gpu" for t in tolerations)
    # The base's hardening and probes survive the patch.
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["readinessProbe"]["grpc"]["port"] == 8001
    assert _container(_deployment(rendered("base")))["image"].endswith(":cpu")


def test_gitops_overlay_mounts_routes_from_a_config_map() -> None:
    objects = rendered("overlays/gitops-routes")
    kinds = by_kind(objects)
    claims = {c["metadata"]["name"] for c in kinds["PersistentVolumeClaim"]}
    assert claims == {"inferd-models"}  # no shared volume needed
    deployment = _deployment(objects)
    opts = serve_args(_container(deployment))
    mounts = {m["mountPath"]: m for m in _container(deployment)["volumeMounts"]}
    state = mounts[str(opts.state_dir)]
    assert state["readOnly"] is True
    volume = next(
        v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == state["name"]
    )
    assert set(volume) == {"name", "configMap"}
    (config_map,) = kinds["ConfigMap"]
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    assert set(config_map["data"]) == {"routes.json"}


def test_gitops_routes_file_is_valid_state() -> None:
    text = (K8S / "overlays" / "gitops-routes" / "routes.json").read_text()
    data = json.loads(text)
    try:
        from inferd.server.lifecycle.state import LifecycleState
    except ImportError:
        pytest.skip("server.lifecycle (the lifecycle work) is not in this tree")
    state = LifecycleState.from_json(data)
    route = state.model("digits_mlp")
    assert (route.champion, route.challenger, route.weight) == (1, 2, 0.1)


def test_serving_runtime_serves_onnx_and_tensorrt_over_grpc_v2() -> None:
    (runtime,) = load_yaml(KSERVE / "servingruntime.yaml")
    spec = runtime["spec"]
    assert {f["name"] for f in spec["supportedModelFormats"]} == {"onnx", "tensorrt"}
    assert set(spec["protocolVersions"]) == {"v2", "grpc-v2"}
    (container,) = spec["containers"]
    opts = serve_args(container)
    assert str(opts.model_repository) == "/mnt/models"  # KServe's storage initializer
    (port,) = container["ports"]
    assert (port["name"], port["containerPort"]) == ("h2c", opts.grpc_port)
    assert spec["annotations"]["prometheus.kserve.io/port"] == str(opts.metrics_port)


def test_inference_service_canary_uses_the_runtime() -> None:
    (runtime,) = load_yaml(KSERVE / "servingruntime.yaml")
    (service,) = load_yaml(KSERVE / "inferenceservice-canary.yaml")
    predictor = service["spec"]["predictor"]
    assert 0 < predictor["canaryTrafficPercent"] < 100
    model = predictor["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    formats = {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
    assert model["modelFormat"]["name"] in formats
    assert model["protocolVersion"] in runtime["spec"]["protocolVersions"]
    assert [p["name"] for p in model["ports"]] == ["h2c"]


def test_in_server_canary_script_uses_real_cli_flags(capsys: pytest.CaptureFixture[str]) -> None:
    """Every ``inferd models VERB --flag`` in the script exists in our CLI."""
    from inferd.clients.cli import models_main

    script = (KSERVE / "inferd-routes-canary.sh").read_text().replace("\\\n", " ")
    commands = [  # commands, and commented-out ones (promote, rollback)
        shlex.split(line.lstrip("# ").split(" #", 1)[0])
        for line in script.splitlines()
        if line.lstrip("# ").startswith("inferd models ")
    ]
    assert len(commands) >= 4
    for argv in commands:
        verb = argv[2]
        assert models_main([verb, "--help"]) == 0
        helptext = capsys.readouterr().out
        for flag in (a for a in argv if a.startswith("--")):
            assert flag in helptext, f"inferd models {verb}: no {flag}"
