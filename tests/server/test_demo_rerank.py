"""The filter -> rerank demo (server/demo_rerank.py): the BLS pipeline
answers as its numpy reference, and only the rows the cheap model keeps
reach the expensive one."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from conftest import ServerThread

from inferd.clients import InferenceClient
from inferd.server.demo_rerank import build_rerank_models, reference


def _rows_inferred(client: InferenceClient, model: str) -> int:
    (stats,) = client.model_statistics(model)["model_stats"]
    return int(stats["inference_count"])


def test_pipeline_reranks_only_the_kept_rows(
    make_server: Callable[..., ServerThread], tmp_path: Path
) -> None:
    server = make_server(build_rerank_models(tmp_path / "models"))
    features = np.random.default_rng(0).standard_normal((64, 32)).astype(np.float32)
    score, kept = reference(features)
    all_score, _ = reference(features, threshold=-1.0)
    assert 0 < kept.sum() < 64  # the threshold filters some rows, not all
    with InferenceClient(server.address) as client:
        filtered = client.infer("rerank_pipeline", {"features": features}, timeout=60)
        after_filter = _rows_inferred(client, "rerank_expensive")
        everything = client.infer("rerank_all", {"features": features}, timeout=60)
        after_all = _rows_inferred(client, "rerank_expensive")
        cheap_rows = _rows_inferred(client, "filter_cheap")
    assert filtered["kept"].tolist() == kept.tolist()
    np.testing.assert_allclose(filtered["score"], score, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(everything["score"], all_score, rtol=1e-4, atol=1e-6)
    assert everything["kept"].all()
    assert after_filter == kept.sum()
    assert after_all - after_filter == 64
    assert cheap_rows == 64  # rerank_all skips the filter
