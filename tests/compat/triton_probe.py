"""Drive an inferd server with stock ``tritonclient.grpc`` and report what it saw.

    python tests/compat/triton_probe.py --url HOST:PORT --repo DEMO_REPOSITORY

Runs in its own process because ``tritonclient`` and inferd's ``protos``
register the same ``inference.*`` protobuf symbols and cannot share one.
Imports nothing from the project: outputs are checked against onnxruntime
running the repository's own ``model.onnx`` files.

Prints one JSON object on stdout::

    {"checks": {name: bool}, "details": {name: ...}, "section_errors": {section: traceback}}

``checks`` are what only this process can judge (numerics against
onnxruntime, call outcomes); ``details`` carries raw observations (metadata,
config, statistics snapshots, error statuses) for the test to assert on.
Exits 0 even when checks fail; non-zero only if the probe itself crashes.
"""

from __future__ import annotations

import argparse
import json
import queue
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

MODELS = ("digits_mlp", "text_stats", "dense_reference")
ORT_DATATYPES = {
    "tensor(float)": "FP32",
    "tensor(float16)": "FP16",
    "tensor(int64)": "INT64",
    "tensor(int32)": "INT32",
    "tensor(bool)": "BOOL",
    "tensor(string)": "BYTES",
}
#: Generous: each call is local, but CI machines are slow and shared.
CALL_TIMEOUT_S = 30.0


class Probe:
    def __init__(self, url: str, repo: Path) -> None:
        self.client = grpcclient.InferenceServerClient(url)
        self.repo = repo
        self.checks: dict[str, bool] = {}
        self.details: dict[str, Any] = {}
        self.section_errors: dict[str, str] = {}
        self._sessions: dict[str, ort.InferenceSession] = {}
        self.rng = np.random.default_rng(20240601)

    # -- bookkeeping -----------------------------------------------------------------------

    def check(self, name: str, ok: bool, detail: Any = None) -> None:
        self.checks[name] = bool(ok)
        if detail is not None:
            self.details[f"check:{name}"] = detail

    @contextmanager
    def section(self, name: str) -> Iterator[None]:
        """A crash inside one section is recorded, and the probe goes on; the
        test then reports the section's checks as missing with this traceback."""
        try:
            yield
        except Exception:
            self.section_errors[name] = traceback.format_exc(limit=8)

    def error_of(self, fn: Callable[[], Any]) -> dict[str, Any]:
        """What tritonclient reports for a call expected to fail."""
        try:
            fn()
        except InferenceServerException as exc:
            return {"raised": True, "status": exc.status(), "message": exc.message()}
        return {"raised": False, "status": None, "message": None}

    # -- reference -------------------------------------------------------------------------

    def session(self, model: str) -> ort.InferenceSession:
        if model not in self._sessions:
            path = self.repo / model / "1" / "model.onnx"
            self._sessions[model] = ort.InferenceSession(
                str(path), providers=["CPUExecutionProvider"]
            )
        return self._sessions[model]

    def reference(self, model: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """onnxruntime's outputs, with string tensors as bytes (Triton's BYTES)."""
        ort_feeds = {}
        for name, array in feeds.items():
            if array.dtype == object:
                array = np.vectorize(lambda b: b.decode("utf-8"), otypes=[object])(array)
            ort_feeds[name] = array
        session = self.session(model)
        names = [o.name for o in session.get_outputs()]
        results = session.run(names, ort_feeds)
        out = {}
        for name, array in zip(names, results, strict=True):
            if array.dtype == object:
                array = np.vectorize(lambda s: s.encode("utf-8"), otypes=[object])(array)
            out[name] = array
        return out

    @staticmethod
    def compare(got: np.ndarray | None, want: np.ndarray) -> dict[str, Any]:
        """Exact for integers and bytes, allclose for floats (FP16 at its precision)."""
        if got is None:
            return {"ok": False, "why": "output missing from the response"}
        info: dict[str, Any] = {
            "shape": list(got.shape),
            "want_shape": list(want.shape),
            "dtype": str(got.dtype),
            "want_dtype": str(want.dtype),
        }
        if got.shape != want.shape or got.dtype != want.dtype:
            info["ok"] = False
            return info
        if want.dtype == object:
            info["ok"] = got.tolist() == want.tolist()
        elif np.issubdtype(want.dtype, np.floating):
            # FP32 leaves room for GEMM blocking that differs with the batch the
            # server merged the request into; FP16 is compared at its own precision.
            rtol, atol = (1e-3, 1e-3) if want.dtype == np.float16 else (1e-4, 1e-5)
            with np.errstate(invalid="ignore"):  # inf - inf where both overflowed
                info["max_abs_diff"] = float(np.nanmax(np.abs(got.astype(np.float64) - want)))
            info["ok"] = bool(np.allclose(got, want, rtol=rtol, atol=atol))
        else:
            info["ok"] = bool(np.array_equal(got, want))
        return info

    def outputs_match(
        self,
        model: str,
        feeds: dict[str, np.ndarray],
        result: grpcclient.InferResult,
        requested: list[str] | None = None,
    ) -> tuple[bool, dict[str, Any]]:
        """Every expected output equals the reference, and the response holds
        exactly the requested outputs (all of them when none were named)."""
        want = self.reference(model, feeds)
        names = requested or list(want)
        got_names = [o.name for o in result.get_response().outputs]
        per_output = {n: self.compare(result.as_numpy(n), want[n]) for n in names}
        ok = sorted(got_names) == sorted(names) and all(v["ok"] for v in per_output.values())
        return ok, {"response_outputs": got_names, "outputs": per_output}

    # -- request builders ------------------------------------------------------------------

    @staticmethod
    def inputs_for(feeds: dict[str, np.ndarray], datatypes: dict[str, str]) -> list[Any]:
        inputs = []
        for name, array in feeds.items():
            tensor = grpcclient.InferInput(name, list(array.shape), datatypes[name])
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        return inputs

    def digits_feeds(self, rows: int) -> dict[str, np.ndarray]:
        return {"pixels": self.rng.integers(0, 17, size=(rows, 64)).astype(np.float32)}

    def text_feeds(self, rows: int, *, big_ids: bool = False) -> dict[str, np.ndarray]:
        """``big_ids``: magnitudes past 32 bits, so a narrowed INT64 path shows in
        ``id_sum`` (``weighted`` then overflows FP16; leave it out of the request)."""
        tags = [b"alpha", "\u00fcn\u00efc\u00f8de \u2713".encode(), b"", b"tab\tand\nnewline"]
        bound = 2**40 if big_ids else 2000
        return {
            "token_ids": self.rng.integers(-bound, bound, size=(rows, 8), dtype=np.int64),
            "weights": self.rng.uniform(-2, 2, size=(rows, 8)).astype(np.float16),
            "tag": np.array([[tags[i % len(tags)]] for i in range(rows)], dtype=object),
        }

    def dense_feeds(self, rows: int) -> dict[str, np.ndarray]:
        return {"x": self.rng.standard_normal((rows, 1024)).astype(np.float32)}

    DIGITS_TYPES = {"pixels": "FP32"}
    TEXT_TYPES = {"token_ids": "INT64", "weights": "FP16", "tag": "BYTES"}
    DENSE_TYPES = {"x": "FP32"}

    def stats(self, model: str = "", version: str = "") -> list[dict[str, Any]]:
        """ModelStatistics as plain ints (tritonclient's as_json turns int64 into
        strings and drops zero fields)."""
        response = self.client.get_inference_statistics(
            model, version, client_timeout=CALL_TIMEOUT_S
        )

        def duration(d: Any) -> dict[str, int]:
            return {"count": int(d.count), "ns": int(d.ns)}

        out = []
        for s in response.model_stats:
            inf = s.inference_stats
            out.append(
                {
                    "name": s.name,
                    "version": s.version,
                    "last_inference": int(s.last_inference),
                    "inference_count": int(s.inference_count),
                    "execution_count": int(s.execution_count),
                    "success": duration(inf.success),
                    "fail": duration(inf.fail),
                    "queue": duration(inf.queue),
                    "compute_input": duration(inf.compute_input),
                    "compute_infer": duration(inf.compute_infer),
                    "compute_output": duration(inf.compute_output),
                    "batch_stats": {
                        str(b.batch_size): {"compute_infer": duration(b.compute_infer)}
                        for b in s.batch_stats
                    },
                }
            )
        return out

    # -- sections --------------------------------------------------------------------------

    def health_and_metadata(self) -> None:
        c = self.client
        self.check("server_live", c.is_server_live(client_timeout=CALL_TIMEOUT_S))
        self.check("server_ready", c.is_server_ready(client_timeout=CALL_TIMEOUT_S))
        self.check("model_ready", c.is_model_ready("digits_mlp"))
        self.check("model_ready_version_1", c.is_model_ready("digits_mlp", "1"))
        self.check("model_not_ready_unknown_version", not c.is_model_ready("digits_mlp", "7"))
        self.check("model_not_ready_unknown_model", not c.is_model_ready("no_such_model"))
        self.details["server_metadata"] = c.get_server_metadata(as_json=True)
        self.details["repository_index"] = c.get_model_repository_index(as_json=True)
        self.details["model_metadata"] = {}
        self.details["model_config"] = {}
        for model in MODELS:
            meta = c.get_model_metadata(model, as_json=True)
            self.details["model_metadata"][model] = meta
            self.details["model_config"][model] = c.get_model_config(model, as_json=True)
            # The server's metadata must describe the file it serves.
            session = self.session(model)
            want = {
                "inputs": [_ort_tensor(t) for t in session.get_inputs()],
                "outputs": [_ort_tensor(t) for t in session.get_outputs()],
            }
            got = {
                key: [
                    {
                        "name": t["name"],
                        "datatype": t["datatype"],
                        "shape": [int(d) for d in t["shape"]],
                    }
                    for t in meta.get(key, [])
                ]
                for key in ("inputs", "outputs")
            }
            self.check(f"metadata_matches_onnx[{model}]", got == want, {"got": got, "want": want})
        self.details["model_metadata_v1"] = c.get_model_metadata("digits_mlp", "1", as_json=True)

    def unary_inference(self) -> None:
        c = self.client
        before = self.stats("digits_mlp")
        # Sequential requests of 1, 4 and 2 rows: nothing can batch them
        # together, so the statistics deltas are exact.
        feeds1 = self.digits_feeds(1)
        r1 = c.infer("digits_mlp", self.inputs_for(feeds1, self.DIGITS_TYPES), request_id="req-1")
        ok, info = self.outputs_match("digits_mlp", feeds1, r1)
        self.check("infer_digits_batch1", ok, info)
        response = r1.get_response(as_json=True)
        self.check("response_echoes_request_id", response.get("id") == "req-1", response.get("id"))
        self.check(
            "response_names_model_and_version",
            response.get("model_name") == "digits_mlp" and response.get("model_version") == "1",
            {k: response.get(k) for k in ("model_name", "model_version")},
        )

        feeds4 = self.digits_feeds(4)
        r4 = c.infer("digits_mlp", self.inputs_for(feeds4, self.DIGITS_TYPES))
        self.check("infer_digits_batch4", *self.outputs_match("digits_mlp", feeds4, r4))

        feeds2 = self.digits_feeds(2)
        r2 = c.infer(
            "digits_mlp",
            self.inputs_for(feeds2, self.DIGITS_TYPES),
            outputs=[grpcclient.InferRequestedOutput("label")],
        )
        ok, info = self.outputs_match("digits_mlp", feeds2, r2, ["label"])
        self.check("infer_digits_output_subset", ok and r2.as_numpy("probabilities") is None, info)
        after = self.stats("digits_mlp")
        self.details["stats_unary"] = {
            "before": before,
            "after": after,
            "requests": 3,
            "rows": 7,
            "batch_sizes": [1, 4, 2],
        }

        feeds_t = self.text_feeds(4)
        rt = c.infer("text_stats", self.inputs_for(feeds_t, self.TEXT_TYPES))
        self.check("infer_text_stats", *self.outputs_match("text_stats", feeds_t, rt))
        feeds_t2 = self.text_feeds(2, big_ids=True)
        rt2 = c.infer(
            "text_stats",
            self.inputs_for(feeds_t2, self.TEXT_TYPES),
            outputs=[
                grpcclient.InferRequestedOutput("tag_echo"),
                grpcclient.InferRequestedOutput("id_sum"),
            ],
        )
        self.check(
            "infer_text_stats_output_subset",
            *self.outputs_match("text_stats", feeds_t2, rt2, ["tag_echo", "id_sum"]),
        )
        feeds_d = self.dense_feeds(2)
        rd = c.infer("dense_reference", self.inputs_for(feeds_d, self.DENSE_TYPES))
        self.check("infer_dense_reference", *self.outputs_match("dense_reference", feeds_d, rd))

    def call_options(self) -> None:
        """The knobs tritonclient exposes on a unary call."""
        c = self.client
        for algorithm in ("gzip", "deflate"):
            feeds = self.digits_feeds(3)
            result = c.infer(
                "digits_mlp",
                self.inputs_for(feeds, self.DIGITS_TYPES),
                compression_algorithm=algorithm,
            )
            self.check(
                f"infer_compressed[{algorithm}]", *self.outputs_match("digits_mlp", feeds, result)
            )
        # The "parameters" extension: custom request parameters of each type are accepted.
        feeds = self.digits_feeds(1)
        result = c.infer(
            "digits_mlp",
            self.inputs_for(feeds, self.DIGITS_TYPES),
            parameters={"custom_string": "x", "custom_int": 7, "custom_bool": True},
        )
        self.check("infer_with_parameters", *self.outputs_match("digits_mlp", feeds, result))
        # ``timeout`` (µs) travels as Triton's "timeout" request parameter.
        result = c.infer(
            "digits_mlp", self.inputs_for(feeds, self.DIGITS_TYPES), timeout=30_000_000
        )
        self.check("infer_with_server_timeout", *self.outputs_match("digits_mlp", feeds, result))
        result = c.infer(
            "digits_mlp", self.inputs_for(feeds, self.DIGITS_TYPES), client_timeout=CALL_TIMEOUT_S
        )
        self.check("infer_with_client_timeout", *self.outputs_match("digits_mlp", feeds, result))

        done: queue.Queue[tuple[Any, Any]] = queue.Queue()
        feeds = self.text_feeds(3)
        c.async_infer(
            "text_stats",
            self.inputs_for(feeds, self.TEXT_TYPES),
            callback=lambda result, error: done.put((result, error)),
            request_id="async-1",
        )
        result, error = done.get(timeout=CALL_TIMEOUT_S)
        if error is not None:
            self.check("async_infer", False, {"error": str(error)})
        else:
            self.check("async_infer", *self.outputs_match("text_stats", feeds, result))

    def streaming(self) -> None:
        """Triton's ModelStreamInfer: responses carry the request id, a failed
        request answers an error in the stream and the stream goes on."""
        c = self.client
        answers: queue.Queue[tuple[Any, Any]] = queue.Queue()

        def callback(result: Any, error: Any) -> None:
            answers.put((result, error))

        before = self.stats("digits_mlp")
        sent: dict[str, tuple[str, dict[str, np.ndarray]]] = {}
        c.start_stream(callback=callback)
        try:
            for i in range(6):
                if i == 3:
                    c.async_stream_infer(
                        "no_such_model",
                        self.inputs_for(self.digits_feeds(1), self.DIGITS_TYPES),
                        request_id="stream-bad",
                    )
                feeds = self.digits_feeds(1 + i % 2)
                request_id = f"stream-digits-{i}"
                sent[request_id] = ("digits_mlp", feeds)
                c.async_stream_infer(
                    "digits_mlp", self.inputs_for(feeds, self.DIGITS_TYPES), request_id=request_id
                )
            feeds = self.text_feeds(2)
            sent["stream-text"] = ("text_stats", feeds)
            c.async_stream_infer(
                "text_stats", self.inputs_for(feeds, self.TEXT_TYPES), request_id="stream-text"
            )
            received: list[tuple[Any, Any]] = []
            for _ in range(len(sent) + 1):
                try:
                    received.append(answers.get(timeout=CALL_TIMEOUT_S))
                except queue.Empty:
                    break
        finally:
            c.stop_stream()

        results: dict[str, Any] = {}
        errors: list[str] = []
        for result, error in received:
            if error is not None:
                errors.append(error.message())
            else:
                results[result.get_response().id] = result
        matches = {}
        for request_id, (model, feeds) in sent.items():
            if request_id in results:
                matches[request_id] = self.outputs_match(model, feeds, results[request_id])
        self.check(
            "stream_all_answered",
            sorted(results) == sorted(sent),
            {"answered": sorted(results), "sent": sorted(sent)},
        )
        self.check(
            "stream_outputs_match",
            len(matches) == len(sent) and all(ok for ok, _ in matches.values()),
            {k: v[1] for k, v in matches.items() if not v[0]},
        )
        self.check("stream_error_reported", len(errors) == 1, errors)
        self.details["stream_error_messages"] = errors
        self.details["stats_stream"] = {
            "before": before,
            "after": self.stats("digits_mlp"),
            "requests": 6,
            "rows": sum(
                feeds["pixels"].shape[0] for m, feeds in sent.values() if m == "digits_mlp"
            ),
        }

    def statistics(self) -> None:
        self.details["stats_all"] = self.stats()
        self.details["stats_version_1"] = self.stats("digits_mlp", "1")

    def errors(self) -> None:
        c = self.client
        good = self.inputs_for(self.digits_feeds(1), self.DIGITS_TYPES)

        def tensor(name: str, array: np.ndarray, datatype: str) -> Any:
            t = grpcclient.InferInput(name, list(array.shape), datatype)
            t.set_data_from_numpy(array)
            return t

        before = self.stats("digits_mlp")
        wrong_datatype = self.error_of(
            lambda: c.infer("digits_mlp", [tensor("pixels", np.zeros((1, 64), np.int32), "INT32")])
        )
        after = self.stats("digits_mlp")
        self.details["stats_failure"] = {"before": before, "after": after, "requests": 1}

        text = self.text_feeds(1)
        errors = {
            "infer_unknown_model": self.error_of(lambda: c.infer("no_such_model", good)),
            "infer_unknown_version": self.error_of(
                lambda: c.infer("digits_mlp", good, model_version="7")
            ),
            "metadata_unknown_model": self.error_of(lambda: c.get_model_metadata("no_such_model")),
            "config_unknown_model": self.error_of(lambda: c.get_model_config("no_such_model")),
            "statistics_unknown_model": self.error_of(
                lambda: c.get_inference_statistics("no_such_model")
            ),
            "infer_wrong_datatype": wrong_datatype,
            "infer_wrong_shape": self.error_of(
                lambda: c.infer(
                    "digits_mlp", [tensor("pixels", np.zeros((1, 63), np.float32), "FP32")]
                )
            ),
            "infer_batch_too_large": self.error_of(
                lambda: c.infer(
                    "digits_mlp", [tensor("pixels", np.zeros((65, 64), np.float32), "FP32")]
                )
            ),
            "infer_missing_input": self.error_of(
                lambda: c.infer("text_stats", [tensor("token_ids", text["token_ids"], "INT64")])
            ),
            "infer_unknown_output": self.error_of(
                lambda: c.infer(
                    "digits_mlp", good, outputs=[grpcclient.InferRequestedOutput("nope")]
                )
            ),
            # Model control mode none: loading on request is refused, with a reason.
            "load_model": self.error_of(lambda: c.load_model("digits_mlp")),
            "unload_model": self.error_of(lambda: c.unload_model("digits_mlp")),
            # Extensions the server does not claim must say so, not half-work.
            "system_shared_memory_status": self.error_of(
                lambda: c.get_system_shared_memory_status()
            ),
            "cuda_shared_memory_status": self.error_of(lambda: c.get_cuda_shared_memory_status()),
            "trace_settings": self.error_of(lambda: c.get_trace_settings()),
            "log_settings": self.error_of(lambda: c.get_log_settings()),
        }
        self.details["errors"] = errors
        self.check("digits_mlp_still_ready_after_errors", c.is_model_ready("digits_mlp"))

    def observations(self) -> None:
        """Behaviour outside the claimed extensions, recorded for the report
        rather than asserted: a BYTES element that is not UTF-8, and Triton's
        classification request (``class_count``)."""
        c = self.client
        feeds = self.text_feeds(1)
        feeds["tag"] = np.array([[b"\xff\xfe not utf-8"]], dtype=object)
        self.details["observed_non_utf8_bytes"] = self.error_of(
            lambda: c.infer("text_stats", self.inputs_for(feeds, self.TEXT_TYPES))
        )
        feeds = self.digits_feeds(1)
        try:
            result = c.infer(
                "digits_mlp",
                self.inputs_for(feeds, self.DIGITS_TYPES),
                outputs=[grpcclient.InferRequestedOutput("probabilities", class_count=3)],
            )
            out = result.as_numpy("probabilities")
            self.details["observed_classification"] = {
                "raised": False,
                "datatype": [o.datatype for o in result.get_response().outputs],
                "shape": None if out is None else list(out.shape),
            }
        except InferenceServerException as exc:
            self.details["observed_classification"] = {
                "raised": True,
                "status": exc.status(),
                "message": exc.message(),
            }

    def run(self) -> dict[str, Any]:
        for name in (
            "health_and_metadata",
            "unary_inference",
            "call_options",
            "streaming",
            "statistics",
            "errors",
            "observations",
        ):
            with self.section(name):
                getattr(self, name)()
        self.client.close()
        return {
            "checks": self.checks,
            "details": self.details,
            "section_errors": self.section_errors,
        }


def _ort_tensor(t: Any) -> dict[str, Any]:
    # Symbolic (named or unknown) dimensions are the variable ones: -1 in the protocol.
    shape = [d if isinstance(d, int) else -1 for d in t.shape]
    return {"name": t.name, "datatype": ORT_DATATYPES.get(t.type, t.type), "shape": shape}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--url", required=True, help="HOST:PORT of the gRPC endpoint")
    parser.add_argument("--repo", required=True, type=Path, help="the demo model repository")
    args = parser.parse_args(argv)
    report = Probe(args.url, args.repo).run()
    json.dump(report, sys.stdout, default=_jsonable)
    sys.stdout.write("\n")
    return 0


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (bytes, np.ndarray)):
        return repr(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


if __name__ == "__main__":
    sys.exit(main())
