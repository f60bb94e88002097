"""Stock ``tritonclient.grpc`` against inferd, judged by Triton's semantics.

The client runs in a child process (``triton_probe.py``): ``tritonclient`` and
our ``protos`` register the same protobuf symbols, and this process already
holds ours (the server runs in a thread here). The probe runs once per
session; each test below asserts one property of its report, so a failure
names what broke.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from inferd.server.about import EXTENSIONS, SERVER_NAME, SERVER_VERSION

PROBE = Path(__file__).with_name("triton_probe.py")
MODELS = ("dense_reference", "digits_mlp", "text_stats")

#: Every check the probe computes. Kept explicit so a check that silently
#: stops being reported fails here instead of vanishing.
EXPECTED_CHECKS = (
    "server_live",
    "server_ready",
    "model_ready",
    "model_ready_version_1",
    "model_not_ready_unknown_version",
    "model_not_ready_unknown_model",
    "metadata_matches_onnx[digits_mlp]",
    "metadata_matches_onnx[text_stats]",
    "metadata_matches_onnx[dense_reference]",
    "infer_digits_batch1",
    "response_echoes_request_id",
    "response_names_model_and_version",
    "infer_digits_batch4",
    "infer_digits_output_subset",
    "infer_text_stats",
    "infer_text_stats_output_subset",
    "infer_dense_reference",
    "infer_compressed[gzip]",
    "infer_compressed[deflate]",
    "infer_with_parameters",
    "infer_with_server_timeout",
    "infer_with_client_timeout",
    "async_infer",
    "stream_all_answered",
    "stream_outputs_match",
    "stream_error_reported",
    "digits_mlp_still_ready_after_errors",
)

#: (name, datatype, shape) per input and output, as the protocol reports them.
METADATA = {
    "digits_mlp": {
        "inputs": [("pixels", "FP32", [-1, 64])],
        "outputs": [("probabilities", "FP32", [-1, 10]), ("label", "INT64", [-1, 1])],
    },
    "text_stats": {
        "inputs": [
            ("token_ids", "INT64", [-1, 8]),
            ("weights", "FP16", [-1, 8]),
            ("tag", "BYTES", [-1, 1]),
        ],
        "outputs": [
            ("id_sum", "INT64", [-1, 1]),
            ("weighted", "FP16", [-1, 8]),
            ("tag_echo", "BYTES", [-1, 1]),
        ],
    },
    "dense_reference": {
        "inputs": [("x", "FP32", [-1, 1024])],
        "outputs": [("y", "FP32", [-1, 256])],
    },
}
#: Triton's config spells BYTES as TYPE_STRING and leaves the batch dim out of dims.
CONFIG_TYPES = {
    "FP32": "TYPE_FP32",
    "FP16": "TYPE_FP16",
    "INT64": "TYPE_INT64",
    "BYTES": "TYPE_STRING",
}
MAX_BATCH_SIZE = {"digits_mlp": 64, "text_stats": 32, "dense_reference": 32}


@pytest.fixture(scope="session")
def report(server_address: str, demo_repository: Path) -> dict[str, Any]:
    # find_spec locates the package without importing it (importing would clash).
    if importlib.util.find_spec("tritonclient") is None:
        pytest.skip("tritonclient is not installed (pip install '.[test]')")
    proc = subprocess.run(
        [sys.executable, str(PROBE), "--url", server_address, "--repo", str(demo_repository)],
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert proc.returncode == 0, f"probe crashed:\n{proc.stderr[-6000:]}"
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


@pytest.fixture(scope="session")
def details(report: dict[str, Any]) -> dict[str, Any]:
    d: dict[str, Any] = report["details"]
    return d


def _stats(snapshot: list[dict[str, Any]]) -> dict[str, Any]:
    (only,) = snapshot
    return only


def _delta(run: dict[str, Any], *path: str) -> int:
    before, after = _stats(run["before"]), _stats(run["after"])
    for key in path:
        before, after = before[key], after[key]
    return int(after) - int(before)


# -- the probe itself ------------------------------------------------------------------------


def test_probe_sections_ran_cleanly(report: dict[str, Any]) -> None:
    assert report["section_errors"] == {}


def test_probe_reports_the_expected_checks(report: dict[str, Any]) -> None:
    reported, expected = set(report["checks"]), set(EXPECTED_CHECKS)
    assert {"missing": expected - reported, "unexpected": reported - expected} == {
        "missing": set(),
        "unexpected": set(),
    }


@pytest.mark.parametrize("name", EXPECTED_CHECKS)
def test_check(report: dict[str, Any], name: str) -> None:
    assert report["checks"].get(name) is True, json.dumps(
        {
            "check": name,
            "value": report["checks"].get(name, "missing"),
            "detail": report["details"].get(f"check:{name}"),
            "section_errors": report["section_errors"],
        },
        indent=1,
    )


# -- server and model metadata ---------------------------------------------------------------


def test_server_metadata_names_inferd(details: dict[str, Any]) -> None:
    meta = details["server_metadata"]
    assert (meta["name"], meta["version"]) == (SERVER_NAME, SERVER_VERSION)


def test_extensions_equal_the_servers_claim(details: dict[str, Any]) -> None:
    assert details["server_metadata"]["extensions"] == list(EXTENSIONS)


@pytest.mark.parametrize("model", MODELS)
def test_model_metadata(details: dict[str, Any], model: str) -> None:
    meta = details["model_metadata"][model]
    assert meta["name"] == model
    assert meta["versions"] == ["1"]
    assert meta["platform"] == "onnxruntime_onnx"
    for key in ("inputs", "outputs"):
        # tritonclient's as_json renders int64 dims as strings.
        got = [(t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in meta[key]]
        assert got == METADATA[model][key], key


def test_model_metadata_for_explicit_version(details: dict[str, Any]) -> None:
    assert details["model_metadata_v1"] == details["model_metadata"]["digits_mlp"]


@pytest.mark.parametrize("model", MODELS)
def test_model_config(details: dict[str, Any], model: str) -> None:
    config = details["model_config"][model]["config"]
    assert config["name"] == model
    assert config["platform"] == "onnxruntime_onnx"
    assert config["max_batch_size"] == MAX_BATCH_SIZE[model]
    for key, config_key in (("inputs", "input"), ("outputs", "output")):
        got = [(t["name"], t["data_type"], [int(d) for d in t["dims"]]) for t in config[config_key]]
        want = [(n, CONFIG_TYPES[dt], shape[1:]) for n, dt, shape in METADATA[model][key]]
        assert got == want, key


def test_repository_index_lists_every_model_ready_as_version_1(details: dict[str, Any]) -> None:
    index = details["repository_index"]["models"]
    assert sorted((m["name"], m["version"], m["state"]) for m in index) == [
        (name, "1", "READY") for name in MODELS
    ]


# -- statistics ------------------------------------------------------------------------------


def test_statistics_cover_every_model_with_numeric_versions(details: dict[str, Any]) -> None:
    stats = details["stats_all"]
    assert sorted(s["name"] for s in stats) == list(MODELS)
    # Triton's versions are the version directory's number, never a label.
    assert all(s["version"].isdigit() for s in stats)
    assert [(s["name"], s["version"]) for s in details["stats_version_1"]] == [("digits_mlp", "1")]


def test_statistics_count_rows_requests_and_executions(details: dict[str, Any]) -> None:
    run = details["stats_unary"]
    assert _delta(run, "inference_count") == run["rows"]  # batch 4 counts 4
    # Sequential requests cannot share a batch: one execution each.
    assert _delta(run, "execution_count") == run["requests"]
    assert _delta(run, "success", "count") == run["requests"]
    assert _delta(run, "fail", "count") == 0


def test_statistics_time_queue_and_compute(details: dict[str, Any]) -> None:
    run = details["stats_unary"]
    for phase in ("success", "queue", "compute_infer"):
        assert _delta(run, phase, "count") == run["requests"], phase
        assert _delta(run, phase, "ns") > 0, phase


def test_statistics_batch_stats_by_executed_size(details: dict[str, Any]) -> None:
    run = details["stats_unary"]
    before = _stats(run["before"])["batch_stats"]
    after = _stats(run["after"])["batch_stats"]
    for size in {str(s) for s in run["batch_sizes"]}:
        grown = (
            after[size]["compute_infer"]["count"]
            - before.get(size, {"compute_infer": {"count": 0}})["compute_infer"]["count"]
        )
        assert grown == run["batch_sizes"].count(int(size)), size


def test_statistics_last_inference_advances(details: dict[str, Any]) -> None:
    run = details["stats_unary"]
    before, after = _stats(run["before"]), _stats(run["after"])
    # Milliseconds since the epoch: after 2020 and moving forward.
    assert after["last_inference"] > 1_577_836_800_000
    assert after["last_inference"] >= before["last_inference"]


def test_statistics_count_stream_requests(details: dict[str, Any]) -> None:
    run = details["stats_stream"]
    assert _delta(run, "success", "count") == run["requests"]
    assert _delta(run, "inference_count") == run["rows"]
    # Concurrent stream requests may share executions (Triton batches them).
    assert 1 <= _delta(run, "execution_count") <= run["requests"]


def test_statistics_count_a_rejected_request_as_failure(details: dict[str, Any]) -> None:
    run = details["stats_failure"]
    assert _delta(run, "fail", "count") == run["requests"]
    assert _delta(run, "success", "count") == 0
    assert _delta(run, "inference_count") == 0


# -- errors as tritonclient reports them -----------------------------------------------------


@pytest.mark.parametrize(
    ("call", "status"),
    [
        ("infer_unknown_model", "StatusCode.NOT_FOUND"),
        ("infer_unknown_version", "StatusCode.NOT_FOUND"),
        ("metadata_unknown_model", "StatusCode.NOT_FOUND"),
        ("config_unknown_model", "StatusCode.NOT_FOUND"),
        ("statistics_unknown_model", "StatusCode.NOT_FOUND"),
        ("infer_wrong_datatype", "StatusCode.INVALID_ARGUMENT"),
        ("infer_wrong_shape", "StatusCode.INVALID_ARGUMENT"),
        ("infer_batch_too_large", "StatusCode.INVALID_ARGUMENT"),
        ("infer_missing_input", "StatusCode.INVALID_ARGUMENT"),
        ("infer_unknown_output", "StatusCode.INVALID_ARGUMENT"),
        # model_repository is claimed, but the session server runs in model control
        # mode none (as Triton's default): loading on request is refused.
        ("load_model", "StatusCode.FAILED_PRECONDITION"),
        ("unload_model", "StatusCode.FAILED_PRECONDITION"),
        # Extensions the server does not claim answer UNIMPLEMENTED, keeping the list truthful.
        ("system_shared_memory_status", "StatusCode.UNIMPLEMENTED"),
        ("cuda_shared_memory_status", "StatusCode.UNIMPLEMENTED"),
        ("trace_settings", "StatusCode.UNIMPLEMENTED"),
        ("log_settings", "StatusCode.UNIMPLEMENTED"),
    ],
)
def test_error_status(details: dict[str, Any], call: str, status: str) -> None:
    error = details["errors"][call]
    assert error["raised"], f"{call} succeeded"
    assert error["status"] == status, error
    assert error["message"], "an error needs a message for the caller"


@pytest.mark.parametrize(
    ("call", "words"),
    [
        ("infer_unknown_model", ("no_such_model",)),
        ("infer_wrong_datatype", ("pixels", "INT32", "FP32")),
        ("infer_wrong_shape", ("pixels", "63")),
        ("infer_missing_input", ("weights", "tag")),
        ("infer_unknown_output", ("nope",)),
    ],
)
def test_error_message_names_the_fault(
    details: dict[str, Any], call: str, words: tuple[str, ...]
) -> None:
    message = details["errors"][call]["message"]
    assert all(w in message for w in words), message


def test_stream_error_names_the_model(details: dict[str, Any]) -> None:
    # In a stream an error arrives as the response's error_message: no status code.
    (message,) = details["stream_error_messages"]
    assert "no_such_model" in message


# -- model repository extension (explicit model control mode) --------------------------------

REPOSITORY_PROBE = """
import json, sys
import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

c = grpcclient.InferenceServerClient(sys.argv[1])
out = {"index_before": [(m.name, m.state) for m in c.get_model_repository_index().models]}
out["ready_before"] = c.is_model_ready("plus")
c.load_model("plus")
out["ready_after_load"] = c.is_model_ready("plus")
x = grpcclient.InferInput("x", [1, 2], "FP32")
x.set_data_from_numpy(np.array([[1.0, 2.0]], np.float32))
out["y"] = c.infer("plus", [x]).as_numpy("y").tolist()
c.unload_model("plus")
out["ready_after_unload"] = c.is_model_ready("plus")
try:
    c.load_model("no_such_model")
    out["unknown"] = None
except InferenceServerException as exc:
    out["unknown"] = exc.status()
print(json.dumps(out))
"""


def test_stock_client_loads_and_unloads_in_explicit_mode(tmp_path: Path, make_server: Any) -> None:
    if importlib.util.find_spec("tritonclient") is None:
        pytest.skip("tritonclient is not installed (pip install '.[test]')")
    from lifecycle_models import plus, write_config

    plus(tmp_path / "plus" / "1" / "model.onnx", 1)
    write_config(tmp_path, "plus", "")
    server = make_server(tmp_path, model_control_mode="explicit")
    proc = subprocess.run(
        [sys.executable, "-c", REPOSITORY_PROBE, server.address],
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout)
    assert out["index_before"] == [["plus", "UNAVAILABLE"]]
    assert (out["ready_before"], out["ready_after_load"], out["ready_after_unload"]) == (
        False,
        True,
        False,
    )
    assert out["y"] == [[2.0, 3.0]]
    assert out["unknown"] == "StatusCode.NOT_FOUND"
