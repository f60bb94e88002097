"""Champion against challenger during a shadow rollout: the challenger's
outputs (x + 2) against the champion's (x + 1) on the same requests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from lifecycle_models import PRINCIPAL_HEADER, HeaderIdentity, rollout_repository
from monitoring_helpers import metric, wait_until

from inferd.clients import InferenceClient
from inferd.clients.admin import AdminClient


def test_a_shadow_challenger_that_answers_differently_shows_drift_against_the_champion(
    make_server: Any, tmp_path: Path
) -> None:
    repository = rollout_repository(tmp_path / "models")
    server = make_server(
        repository,
        interceptors=[HeaderIdentity()],
        state_poll_s=0.1,
        metrics_port=0,
        monitor_sample_rate=1.0,
        monitor_reference_rows=160,
        drift_window_rows=160,
        drift_min_rows=80,
        monitor_interval_s=0.05,
    )
    port = server.server.metrics_port
    with AdminClient(server.address, metadata=[(PRINCIPAL_HEADER, "alice")]) as admin:
        admin.set_stage("plus", 2, "staging")
        admin.set_route("plus", 2, "shadow", 1.0)
    challenger = {"model": "plus", "version": "2", "champion": "1", "tensor": "y"}
    rng = np.random.default_rng(3)
    with InferenceClient(server.address) as client:
        for _ in range(60):
            client.infer("plus", {"x": rng.normal(size=(8, 2)).astype(np.float32)})
    # Both versions captured their own reference from the same inputs; against
    # the champion's answers the challenger's are one standard deviation off.
    wait_until(
        lambda: metric(port, "inferd_drift_challenger_psi", **challenger) > 0.2,
        what="challenger drift over 0.2",
    )
    # Each version against its own reference: only sampling noise (same inputs
    # throughout), far below the gap between the two.
    gap = metric(port, "inferd_drift_challenger_psi", **challenger)
    for version in ("1", "2"):
        own = metric(port, "inferd_drift_psi", model="plus", version=version, tensor="y")
        assert own < gap / 3
