"""Both inferd clients (and the CLI) against a live server on the demo models.

Every numeric result is checked against onnxruntime run in-process on the
same model.onnx, so a codec bug on either side of the wire shows up as a
mismatch rather than passing through a round trip unnoticed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnxruntime as ort
import pytest

from inferd.clients import AsyncInferenceClient, InferenceClient, InferenceServerError, InferResult
from inferd.clients.cli import infer_main, models_main

MODELS = ("digits_mlp", "text_stats", "dense_reference")
#: Non-ASCII UTF-8, an empty string and an embedded NUL: BYTES must carry all
#: of them unchanged (onnxruntime itself only takes UTF-8 text).
TAGS = ["héllo wörld", "日本語テキスト", "emoji 🚀🔥", "", "nul\x00inside", "plain"]


# --- references ----------------------------------------------------------------


@pytest.fixture(scope="module")
def reference(demo_repository: Path) -> Callable[[str, dict[str, np.ndarray]], dict[str, Any]]:
    """Run a demo model in-process with onnxruntime: the expected answers."""
    sessions: dict[str, ort.InferenceSession] = {}

    def run(model: str, inputs: dict[str, np.ndarray]) -> dict[str, Any]:
        if model not in sessions:
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1  # as the demo configs; same summation order
            sessions[model] = ort.InferenceSession(
                str(demo_repository / model / "1" / "model.onnx"),
                options,
                providers=["CPUExecutionProvider"],
            )
        session = sessions[model]
        feed = {}
        for name, value in inputs.items():
            if value.dtype == object:
                # onnxruntime's Python binding takes string tensors as str.
                value = np.vectorize(lambda b: b.decode("utf-8"), otypes=[object])(value)
            feed[name] = value
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, feed), strict=True))

    return run


def model_inputs(model: str, rows: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    if model == "digits_mlp":
        return {"pixels": rng.integers(0, 17, size=(rows, 64)).astype(np.float32)}
    if model == "text_stats":
        tags = np.array([[TAGS[i % len(TAGS)].encode()] for i in range(rows)], dtype=object)
        return {
            "token_ids": rng.integers(-1000, 1000, size=(rows, 8), dtype=np.int64),
            # Exact FP16 values (multiples of 1/8) so products stay exact too.
            "weights": (rng.integers(-16, 16, size=(rows, 8)) / 8).astype(np.float16),
            "tag": tags,
        }
    return {"x": rng.standard_normal((rows, 1024), dtype=np.float32)}


def assert_matches(result: InferResult, expected: dict[str, Any]) -> None:
    assert list(result) == list(expected)
    for name, want in expected.items():
        got = result[name]
        assert got.shape == want.shape, name
        if want.dtype == object:
            # The server returns bytes; the reference returns str.
            assert [b.decode("utf-8") for b in got.reshape(-1)] == list(want.reshape(-1)), name
        elif want.dtype.kind in "iu":
            assert got.dtype == want.dtype, name
            np.testing.assert_array_equal(got, want, err_msg=name)
        else:
            assert got.dtype == want.dtype, name
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7, err_msg=name)


@pytest.fixture
def client(server_address: str) -> Iterator[InferenceClient]:
    with InferenceClient(server_address) as c:
        yield c


# --- sync client: inference ----------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("rows", [1, 5])
def test_sync_infer_matches_onnxruntime(
    client: InferenceClient, reference: Any, model: str, rows: int
) -> None:
    inputs = model_inputs(model, rows, seed=rows)
    result = client.infer(model, inputs)
    assert result.model_name == model
    assert result.model_version == "1"
    assert_matches(result, reference(model, inputs))


def test_digits_labels_are_the_argmax_of_real_digits(client: InferenceClient) -> None:
    # A trained model, not just matching numbers: it should read real digits.
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = digits.data[:64].astype(np.float32)
    result = client.infer("digits_mlp", {"pixels": pixels})
    labels = result["label"].reshape(-1)
    np.testing.assert_array_equal(labels, result["probabilities"].argmax(axis=1))
    np.testing.assert_allclose(result["probabilities"].sum(axis=1), 1.0, rtol=1e-5)
    assert (labels == digits.target[:64]).mean() > 0.9


def test_fp16_and_bytes_round_trip(client: InferenceClient) -> None:
    inputs = model_inputs("text_stats", len(TAGS))
    result = client.infer("text_stats", inputs)
    assert result["weighted"].dtype == np.float16
    np.testing.assert_array_equal(
        result["weighted"], (inputs["token_ids"].astype(np.float16) * inputs["weights"])
    )
    np.testing.assert_array_equal(result["id_sum"][:, 0], inputs["token_ids"].sum(axis=1))
    assert result["tag_echo"].dtype == object
    assert [b.decode("utf-8") for b in result["tag_echo"][:, 0]] == TAGS


def test_bytes_input_given_as_str_array(client: InferenceClient) -> None:
    # A numpy str array travels as UTF-8 BYTES and comes back as bytes.
    inputs = model_inputs("text_stats", 2)
    inputs["tag"] = np.array([["ünïcode"], ["ascii"]])
    result = client.infer("text_stats", inputs)
    assert result["tag_echo"].tolist() == [["ünïcode".encode()], [b"ascii"]]


@pytest.mark.parametrize(
    ("model", "outputs"),
    [
        ("digits_mlp", ["label"]),
        ("digits_mlp", ["label", "probabilities"]),  # reverse of the model's order
        ("text_stats", ["tag_echo", "id_sum"]),
    ],
)
def test_output_subset_in_requested_order(
    client: InferenceClient, reference: Any, model: str, outputs: list[str]
) -> None:
    inputs = model_inputs(model, 3)
    result = client.infer(model, inputs, outputs=outputs)
    assert list(result) == outputs
    expected = reference(model, inputs)
    assert_matches(result, {name: expected[name] for name in outputs})


def test_request_id_is_echoed(client: InferenceClient) -> None:
    result = client.infer("digits_mlp", model_inputs("digits_mlp", 1), request_id="req-42/ü")
    assert result.id == "req-42/ü"


def test_explicit_version(client: InferenceClient, reference: Any) -> None:
    inputs = model_inputs("digits_mlp", 2)
    result = client.infer("digits_mlp", inputs, version="1")
    assert result.model_version == "1"
    assert_matches(result, reference("digits_mlp", inputs))


def test_unknown_version_is_not_found(client: InferenceClient) -> None:
    with pytest.raises(InferenceServerError) as info:
        client.infer("digits_mlp", model_inputs("digits_mlp", 1), version="7")
    assert info.value.code == grpc.StatusCode.NOT_FOUND
    assert "7" in info.value.details and "digits_mlp" in info.value.details


def test_unknown_model_is_not_found(client: InferenceClient) -> None:
    with pytest.raises(InferenceServerError) as info:
        client.infer("no_such_model", {"x": np.zeros((1, 2), np.float32)})
    assert info.value.code == grpc.StatusCode.NOT_FOUND
    assert "no_such_model" in info.value.details
    assert str(info.value).startswith("NOT_FOUND: ")


def test_tiny_timeout_is_deadline_exceeded(client: InferenceClient, reference: Any) -> None:
    # gRPC rounds deadlines up to whole milliseconds, so a model that answers
    # in well under 1 ms can beat a 1 µs timeout; a full dense_reference
    # batch takes several ms, so the deadline always wins.
    inputs = model_inputs("dense_reference", 32)
    with pytest.raises(InferenceServerError) as info:
        client.infer("dense_reference", inputs, timeout=1e-6)
    assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    # The expired request leaves the model serving.
    assert_matches(client.infer("dense_reference", inputs), reference("dense_reference", inputs))


def test_metadata_headers_pass_through(server_address: str, reference: Any) -> None:
    # Client-wide and per-call headers (upper case is normalized, -bin is binary).
    headers = [("Authorization", "Bearer t0ken"), ("x-trace-bin", b"\x00\x01\xff")]
    inputs = model_inputs("digits_mlp", 2)
    with InferenceClient(server_address, metadata=headers) as c:
        result = c.infer(
            "digits_mlp", inputs, metadata=[("authorization", "Bearer newer"), ("x-tenant", "a")]
        )
        assert c.is_server_ready(metadata=[("x-tenant", "b")])
    assert_matches(result, reference("digits_mlp", inputs))


# --- sync client: metadata RPCs ------------------------------------------------


def test_health(client: InferenceClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("digits_mlp")
    assert client.is_model_ready("digits_mlp", "1")
    assert not client.is_model_ready("digits_mlp", "7")
    assert not client.is_model_ready("no_such_model")


def test_server_metadata(client: InferenceClient) -> None:
    meta = client.server_metadata()
    assert meta["name"] == "inferd"
    assert meta["version"]
    assert {"model_configuration", "statistics"} <= set(meta["extensions"])


def test_model_metadata_carries_the_model_card(client: InferenceClient) -> None:
    meta = client.model_metadata("digits_mlp")
    assert meta["name"] == "digits_mlp"
    assert meta["versions"] == ["1"]
    assert meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "pixels", "datatype": "FP32", "shape": [-1, 64]}]
    assert meta["outputs"] == [
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]},
        {"name": "label", "datatype": "INT64", "shape": [-1, 1]},
    ]
    props = meta["properties"]
    assert props["owner"] == "inferd maintainers"
    assert "handwritten digits" in props["description"]
    assert 0.9 < float(props["metrics.accuracy"]) <= 1.0
    assert props["metrics.test_samples"] == "450"


def test_model_metadata_of_text_stats(client: InferenceClient) -> None:
    meta = client.model_metadata("text_stats", "1")
    assert [(t["name"], t["datatype"], t["shape"]) for t in meta["inputs"]] == [
        ("token_ids", "INT64", [-1, 8]),
        ("weights", "FP16", [-1, 8]),
        ("tag", "BYTES", [-1, 1]),
    ]
    assert [t["datatype"] for t in meta["outputs"]] == ["INT64", "FP16", "BYTES"]


def test_model_config(client: InferenceClient) -> None:
    config = client.model_config("text_stats")
    assert config["name"] == "text_stats"
    assert config["max_batch_size"] == 32
    assert [(t["name"], t["data_type"], t["dims"]) for t in config["input"]] == [
        ("token_ids", "TYPE_INT64", [8]),
        ("weights", "TYPE_FP16", [8]),
        ("tag", "TYPE_STRING", [1]),
    ]
    with pytest.raises(InferenceServerError) as info:
        client.model_config("no_such_model")
    assert info.value.code == grpc.StatusCode.NOT_FOUND


def test_model_statistics_count_this_tests_requests(client: InferenceClient) -> None:
    # The server is shared with other tests, so compare before and after.
    def digits_stats() -> dict[str, Any]:
        (stats,) = client.model_statistics("digits_mlp", "1")["model_stats"]
        return stats

    before = digits_stats()
    for rows in (1, 3, 4):
        client.infer("digits_mlp", model_inputs("digits_mlp", rows))
    after = digits_stats()
    assert after["name"] == "digits_mlp" and after["version"] == "1"
    assert after["inference_count"] - before["inference_count"] == 8
    success = after["inference_stats"]["success"]
    assert success["count"] - before["inference_stats"]["success"]["count"] == 3
    assert success["ns"] > before["inference_stats"]["success"]["ns"]
    assert after["execution_count"] > before["execution_count"]
    assert after["last_inference"] > 0
    everything = client.model_statistics()["model_stats"]
    assert {s["name"] for s in everything} == set(MODELS)


def test_repository_index(client: InferenceClient) -> None:
    index = client.repository_index()
    assert [(m["name"], m["version"], m["state"]) for m in index] == [
        (name, "1", "READY") for name in sorted(MODELS)
    ]
    assert client.repository_index(ready=True) == index


# --- sync client: streaming ----------------------------------------------------


def stream_items() -> list[tuple[str, dict[str, np.ndarray]]]:
    good = model_inputs("digits_mlp", 2)
    return [
        ("good-1", good),
        ("bad-shape", {"pixels": np.zeros((1, 63), np.float32)}),
        ("good-2", model_inputs("digits_mlp", 1, seed=7)),
        ("bad-dtype", {"pixels": np.zeros((1, 64), np.float64)}),
        ("bad-name", {"pixles": np.zeros((1, 64), np.float32)}),
        ("good-3", model_inputs("digits_mlp", 4, seed=8)),
    ]


def check_stream_replies(replies: list[Any], reference: Any) -> None:
    items = dict(stream_items())
    # Replies may come back in any order; match them by request id.
    by_id: dict[str, Any] = {}
    for reply in replies:
        key = reply.request_id if isinstance(reply, InferenceServerError) else reply.id
        assert key not in by_id, f"two replies for {key}"
        by_id[key] = reply
    assert set(by_id) == set(items)
    for rid, reply in by_id.items():
        if rid.startswith("good"):
            assert isinstance(reply, InferResult), reply
            assert_matches(reply, reference("digits_mlp", items[rid]))
        else:
            assert isinstance(reply, InferenceServerError), rid
            assert reply.code == grpc.StatusCode.UNKNOWN  # a stream reply has no status
    assert "63" in by_id["bad-shape"].details
    assert "FP64" in by_id["bad-dtype"].details
    assert "pixles" in by_id["bad-name"].details


def test_sync_stream_mixes_good_and_bad_requests(client: InferenceClient, reference: Any) -> None:
    check_stream_replies(list(client.stream_infer("digits_mlp", stream_items())), reference)


def test_sync_stream_to_unknown_model_answers_each_request(client: InferenceClient) -> None:
    items = [("one", {"x": np.zeros((1, 1), np.float32)}), ("two", {"x": np.ones(1)})]
    replies = list(client.stream_infer("no_such_model", items))
    assert sorted(r.request_id for r in replies) == ["one", "two"]
    assert all("no_such_model" in r.details for r in replies)


# --- async client --------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
async def test_async_infer_matches_onnxruntime(
    server_address: str, reference: Any, model: str
) -> None:
    inputs = model_inputs(model, 4, seed=11)
    async with AsyncInferenceClient(server_address) as c:
        result = await c.infer(model, inputs, request_id=f"async-{model}")
    assert result.id == f"async-{model}"
    assert result.model_version == "1"
    assert_matches(result, reference(model, inputs))


async def test_async_output_subset_version_and_errors(server_address: str, reference: Any) -> None:
    inputs = model_inputs("text_stats", len(TAGS))
    async with AsyncInferenceClient(server_address, metadata=[("x-tenant", "async")]) as c:
        result = await c.infer("text_stats", inputs, outputs=["tag_echo", "weighted"], version="1")
        assert list(result) == ["tag_echo", "weighted"]
        assert [b.decode() for b in result["tag_echo"][:, 0]] == TAGS
        expected = reference("text_stats", inputs)
        assert_matches(result, {k: expected[k] for k in ("tag_echo", "weighted")})

        with pytest.raises(InferenceServerError) as info:
            await c.infer("text_stats", inputs, version="7")
        assert info.value.code == grpc.StatusCode.NOT_FOUND
        with pytest.raises(InferenceServerError) as info:
            await c.infer("nope", inputs)
        assert info.value.code == grpc.StatusCode.NOT_FOUND
        assert "nope" in info.value.details
        with pytest.raises(InferenceServerError) as info:
            await c.infer("dense_reference", model_inputs("dense_reference", 32), timeout=1e-6)
        assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_async_metadata_rpcs(server_address: str) -> None:
    async with AsyncInferenceClient(server_address) as c:
        assert await c.is_server_live()
        assert await c.is_server_ready()
        assert await c.is_model_ready("text_stats")
        assert (await c.server_metadata())["name"] == "inferd"
        meta = await c.model_metadata("dense_reference")
        assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 1024]}]
        assert meta["properties"]["owner"] == "inferd maintainers"
        assert int(meta["properties"]["metrics.flops_per_sample"]) > 0
        assert (await c.model_config("dense_reference"))["max_batch_size"] == 32
        stats = (await c.model_statistics("dense_reference"))["model_stats"]
        assert [s["version"] for s in stats] == ["1"]
        index = await c.repository_index(ready=True)
        assert sorted(m["name"] for m in index) == sorted(MODELS)


async def test_async_stream_mixes_good_and_bad_requests(
    server_address: str, reference: Any
) -> None:
    async def items() -> Any:
        for item in stream_items():
            yield item

    async with AsyncInferenceClient(server_address) as c:
        replies = [reply async for reply in c.stream_infer("digits_mlp", items())]
    check_stream_replies(replies, reference)


# --- CLI -----------------------------------------------------------------------


def test_cli_infer_prints_outputs(
    server_address: str,
    reference: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    inputs = model_inputs("digits_mlp", 3)
    np.save(tmp_path / "pixels.npy", inputs["pixels"])
    argv = ["digits_mlp", "-i", f"pixels={tmp_path / 'pixels.npy'}", "--url", server_address]
    assert infer_main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("model digits_mlp version 1\n")
    assert "probabilities  FP32  [3, 10]" in out
    assert "label  INT64  [3, 1]" in out

    assert infer_main([*argv, "--json", "-o", "label", "--version", "1"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["model_version"] == "1"
    assert list(printed["outputs"]) == ["label"]
    expected = reference("digits_mlp", inputs)["label"]
    assert printed["outputs"]["label"] == {
        "datatype": "INT64",
        "shape": [3, 1],
        "data": expected.tolist(),
    }


def test_cli_infer_bytes_and_fp16_as_json(
    server_address: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # .npy files cannot hold object arrays without pickle, so BYTES come from
    # a fixed-width str array.
    inputs = model_inputs("text_stats", 2)
    np.save(tmp_path / "ids.npy", inputs["token_ids"])
    np.save(tmp_path / "w.npy", inputs["weights"])
    np.save(tmp_path / "tag.npy", np.array([["grüße"], ["東京"]]))
    argv = [
        "text_stats",
        *("-i", f"token_ids={tmp_path / 'ids.npy'}"),
        *("-i", f"weights={tmp_path / 'w.npy'}"),
        *("-i", f"tag={tmp_path / 'tag.npy'}"),
        *("--url", server_address, "--json"),
    ]
    assert infer_main(argv) == 0
    outputs = json.loads(capsys.readouterr().out)["outputs"]
    assert outputs["tag_echo"]["data"] == [["grüße"], ["東京"]]
    assert outputs["weighted"]["datatype"] == "FP16"
    expected = inputs["token_ids"].astype(np.float16) * inputs["weights"]
    assert outputs["weighted"]["data"] == expected.astype(np.float64).tolist()


def test_cli_infer_reports_server_errors(
    server_address: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    np.save(tmp_path / "x.npy", np.zeros((1, 64), np.float32))
    spec = f"pixels={tmp_path / 'x.npy'}"
    assert infer_main(["no_such_model", "-i", spec, "--url", server_address]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "NOT_FOUND" in captured.err and "no_such_model" in captured.err
    assert infer_main(["digits_mlp", "-i", spec, "--version", "7", "--url", server_address]) == 1
    assert "NOT_FOUND" in capsys.readouterr().err


def test_cli_models_lists_the_repository(
    server_address: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert models_main(["--url", server_address]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "VERSION", "STATE", "REASON"]
    assert [line.split() for line in lines[1:]] == [[m, "1", "READY"] for m in sorted(MODELS)]

    assert models_main(["--url", server_address, "--ready", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(m["name"], m["state"]) for m in listed] == [(m, "READY") for m in sorted(MODELS)]
