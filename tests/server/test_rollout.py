"""Rollouts on a live server, through the admin API: canary, sticky A/B,
shadow, blue/green, automatic rollback by guardrails, a rollback rehearsal
under load, failed loads, shared state between replicas, and the audit log.

The model is ``lifecycle_models.rollout_repository``: v1 (x+1) champion,
v2 (x+2) a good challenger, v3 fails when x[:, 0] >= 4, v4 is slow (~50 ms),
v5 is not a model. Only v1 loads by policy; staging a version loads it.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from conftest import ServerThread
from lifecycle_models import (
    PRINCIPAL_HEADER,
    X_FAILS,
    Hammer,
    HeaderIdentity,
    X,
    rollout_repository,
    version_of,
    wait_for,
)
from metrics_scrape import scrape, value

from inferd.clients import InferenceClient, InferenceServerError
from inferd.clients.admin import AdminClient
from inferd.protos.inferd.admin.v1 import admin_pb2 as apb
from inferd.server.grpc.admin import ADMIN_METHODS

MakeServer = Callable[..., ServerThread]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return rollout_repository(tmp_path / "models")


def start(make_server: MakeServer, repo: Path, **options: Any) -> ServerThread:
    options.setdefault("state_poll_s", 0.1)
    options.setdefault("metrics_port", 0)
    return make_server(repo, interceptors=[HeaderIdentity()], **options)


def admin_for(server: ServerThread, who: str = "alice") -> AdminClient:
    return AdminClient(server.address, metadata=[(PRINCIPAL_HEADER, who)])


@pytest.fixture
def server(make_server: MakeServer, repo: Path) -> ServerThread:
    return start(make_server, repo)


@pytest.fixture
def admin(server: ServerThread) -> Iterator[AdminClient]:
    with admin_for(server) as client:
        yield client


@pytest.fixture
def client(server: ServerThread) -> Iterator[InferenceClient]:
    with InferenceClient(server.address) as c:
        yield c


def answer(client: InferenceClient, x: np.ndarray = X, **kw: Any) -> int:
    result = client.infer("plus", {"x": x}, timeout=30, **kw)
    v = version_of(x, result["y"])
    assert result.model_version == str(v)
    return v


def stats(admin: AdminClient, variant: str) -> dict[str, Any]:
    (route,) = admin.routes("plus")
    rows = [s for s in route.get("stats", []) if s["variant"] == variant]
    return rows[0] if rows else {}


def scraped(server: ServerThread, sample: str, **labels: str) -> float:
    """The value of ``sample`` with ``labels`` on the server's /metrics (0 if absent)."""
    return value(scrape(server.server.metrics_port), sample, **labels)


def four_sigma(n: int, p: float) -> float:
    return 4 * math.sqrt(n * p * (1 - p))


# --- traffic splits --------------------------------------------------------------------


def test_a_staged_version_is_loaded_but_takes_no_traffic(
    admin: AdminClient, client: InferenceClient
) -> None:
    route = admin.set_stage("plus", 2, "staging")
    assert {s["version"]: s.get("ready", False) for s in route["stages"]} == {1: True, 2: True}
    assert route["serving"] == 1
    assert {answer(client) for _ in range(20)} == {1}
    assert answer(client, version="2") == 2  # reachable by explicit version, for testing
    assert [m["version"] for m in client.repository_index()] == ["1", "2"]


def test_canary_at_ten_percent(admin: AdminClient, client: InferenceClient) -> None:
    admin.set_stage("plus", 2, "staging")
    route = admin.set_route("plus", 2, "canary", 0.1)
    assert (route["champion"], route["challenger"], route["weight"]) == (1, 2, 0.1)
    n = 3000
    counts: Counter[int] = Counter()
    for chunk in range(0, n, 500):  # streams of 500: well inside the queue limit
        requests = ((str(i), {"x": X}) for i in range(chunk, chunk + 500))
        for reply in client.stream_infer("plus", requests):
            assert not isinstance(reply, InferenceServerError), reply
            counts[version_of(X, reply["y"])] += 1
    assert set(counts) == {1, 2} and counts.total() == n
    assert abs(counts[2] - 0.1 * n) < four_sigma(n, 0.1), counts
    # The router's own counters agree with what callers saw.
    assert stats(admin, "challenger")["requests"] == counts[2]
    assert stats(admin, "champion")["requests"] == counts[1]
    share = stats(admin, "challenger")["traffic_share"]
    assert share == pytest.approx(counts[2] / n)


def test_ab_is_sticky_per_routing_key(admin: AdminClient, client: InferenceClient) -> None:
    admin.set_stage("plus", 2, "staging")
    admin.set_route("plus", 2, "ab", 0.5)
    seen: dict[str, set[int]] = {}
    users = [f"user-{i}" for i in range(150)]
    for _ in range(3):
        for user in users:
            # The key may come as a request parameter or as gRPC metadata.
            by_param = answer(client, parameters={"routing_key": user})
            by_header = answer(client, metadata=[("x-routing-key", user)])
            seen.setdefault(user, set()).update({by_param, by_header})
    assert all(len(v) == 1 for v in seen.values()), "a user saw both variants"
    on_b = sum(v == {2} for v in seen.values())
    assert abs(on_b - 75) < four_sigma(150, 0.5)
    with pytest.raises(InferenceServerError) as info:
        answer(client, parameters={"routing_key": 1.5})
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_explicit_version_bypasses_the_route(admin: AdminClient, client: InferenceClient) -> None:
    admin.set_stage("plus", 2, "staging")
    admin.set_route("plus", 2, "canary", 1.0)
    assert answer(client) == 2
    assert answer(client, version="1") == 1
    assert stats(admin, "champion")["requests"] == 0  # explicit versions are not route traffic


def test_shadow_answers_with_the_champion_and_counts_disagreement(
    server: ServerThread, admin: AdminClient, client: InferenceClient
) -> None:
    admin.set_stage("plus", 2, "staging")
    admin.set_route("plus", 2, "shadow", 1.0)
    for _ in range(100):
        assert answer(client) == 1  # the champion's answer, always
    wait_for(lambda: stats(admin, "challenger").get("shadow_requests", 0) == 100)
    shadow = stats(admin, "challenger")
    assert shadow["shadow_disagreements"] == 100  # x+2 never matches x+1
    assert shadow["requests"] == 0  # it answered nobody
    assert stats(admin, "champion")["requests"] == 100
    # The same outcomes on /metrics, for dashboards and alerts.
    shadowed = "inferd_shadow_requests_total"
    assert scraped(server, shadowed, model="plus", version="2", outcome="disagree") == 100
    assert scraped(server, shadowed, model="plus", outcome="agree") == 0


def test_shadow_never_delays_the_caller(admin: AdminClient, client: InferenceClient) -> None:
    admin.set_stage("plus", 4, "staging")
    for _ in range(5):
        answer(client)
    alone = []
    for _ in range(30):
        t0 = time.perf_counter()
        answer(client)
        alone.append(time.perf_counter() - t0)
    admin.set_route("plus", 4, "shadow", 1.0)  # the slow version shadows everything
    latencies = []
    for _ in range(30):
        t0 = time.perf_counter()
        assert answer(client) == 1
        latencies.append(time.perf_counter() - t0)
    wait_for(lambda: stats(admin, "challenger").get("shadow_requests", 0) >= 20, timeout=60)
    shadow = stats(admin, "challenger")
    assert shadow["shadow_disagreements"] == 0 or shadow["shadow_requests"] > 0
    # The caller's latency is the champion's, far below the shadow's own.
    assert statistics.median(latencies) < shadow["window_p50_ms"] / 1000 / 2, (
        statistics.median(latencies),
        shadow["window_p50_ms"],
        statistics.median(alone),
    )


# --- guardrails ------------------------------------------------------------------------


def run_until_rolled_back(
    admin: AdminClient, client: InferenceClient, x: np.ndarray, limit: int = 400
) -> tuple[float, int, int]:
    """Send requests until the challenger is gone; (seconds from the first
    challenger answer or error to the rollback, challenger outcomes, errors)."""
    first: float | None = None
    outcomes = errors = 0
    for _ in range(limit):
        try:
            v = answer(client, x)
        except InferenceServerError:
            errors += 1
            v = 0
        if v != 1:
            outcomes += 1
            first = first or time.monotonic()
        if admin.routes("plus")[0].get("challenger", 0) == 0:
            assert first is not None
            return time.monotonic() - first, outcomes, errors
    raise AssertionError("the challenger was never rolled back")


def test_failing_challenger_is_rolled_back_within_its_window(
    server: ServerThread, admin: AdminClient, client: InferenceClient
) -> None:
    admin.set_stage("plus", 3, "staging")
    guard = {"max_error_ratio": 0.2, "min_requests": 5, "window_seconds": 20}
    admin.set_route("plus", 3, "canary", 0.5, guard, reason="try v3")
    assert answer(client, X) in (1, 3)  # v3 answers ordinary requests
    took, outcomes, errors = run_until_rolled_back(admin, client, X_FAILS)
    assert took < 20
    assert errors >= 1 and outcomes <= 10
    (route,) = admin.routes("plus")
    assert "error ratio" in route["tripped"]
    assert {s["version"]: s["stage"] for s in route["stages"]}[3] == "STAGE_ARCHIVED"
    assert scraped(server, "inferd_guardrail_trips_total", model="plus", version="3") == 1
    # Afterwards the champion answers everything, including what v3 could not.
    assert {answer(client, X_FAILS) for _ in range(50)} == {1}
    (entry,) = [e for e in admin.audit_log("plus") if e["action"] == "guardrail_rollback"]
    assert entry["principal"] == "system:guardrails"
    assert "error ratio" in entry["reason"]
    assert (entry["before"]["challenger"], entry["after"]["challenger"]) == (3, 0)


def test_slow_challenger_is_rolled_back_within_its_window(
    admin: AdminClient, client: InferenceClient
) -> None:
    admin.set_stage("plus", 4, "staging")
    guard = {"max_p99_ms": 25, "min_requests": 5, "window_seconds": 30}
    admin.set_route("plus", 4, "canary", 0.5, guard)
    took, _, errors = run_until_rolled_back(admin, client, X)
    assert took < 30 and errors == 0
    (route,) = admin.routes("plus")
    assert "p99 latency" in route["tripped"]
    assert route["serving"] == 1


# --- promote and rollback --------------------------------------------------------------


def test_rollback_rehearsal_under_load(server: ServerThread, admin: AdminClient) -> None:
    """Blue/green: v2 warm on standby, promote (instant switch), roll back:
    no request fails or goes missing during either switch."""
    admin.set_stage("plus", 2, "staging")
    admin.set_route("plus", 2, "blue_green")
    with Hammer(server.address, threads=4) as hammer:
        wait_for(lambda: len(hammer.versions) > 100)
        assert set(hammer.versions) == {1}  # standby takes nothing
        route = admin.promote("plus", reason="rehearsal")
        assert (route["champion"], route["previous_champions"]) == (2, [1])
        mark = len(hammer.versions)
        wait_for(lambda: hammer.versions[mark:].count(2) > 100)
        route = admin.rollback("plus", reason="rehearsal")
        assert (route["champion"], route.get("previous_champions", [])) == (1, [])
        mark = len(hammer.versions)
        wait_for(lambda: hammer.versions[mark:].count(1) > 100)
    assert hammer.failures == []
    assert hammer.sent == hammer.answered
    assert set(hammer.versions) == {1, 2}
    stages = {s["version"]: s["stage"] for s in admin.routes("plus")[0]["stages"]}
    assert (stages[1], stages[2]) == ("STAGE_PRODUCTION", "STAGE_ARCHIVED")


def test_gates_refuse_and_change_nothing(admin: AdminClient, client: InferenceClient) -> None:
    cases = [
        (lambda: admin.promote("plus", 2), "only a staging version"),
        (lambda: admin.set_route("plus", 2, "canary", 0.1), "stage development"),
        (lambda: admin.rollback("plus"), "no challenger and no previous"),
        (lambda: admin.set_stage("plus", 2, "shadow"), "from development to shadow"),
    ]
    for call, words in cases:
        with pytest.raises(InferenceServerError) as info:
            call()
        assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert words in info.value.details
    assert admin.routes("plus")[0].get("revision", 0) == 0
    assert admin.audit_log() == []
    with pytest.raises(InferenceServerError) as info:
        admin.set_stage("nope", 2, "staging")
    assert info.value.code == grpc.StatusCode.NOT_FOUND
    assert answer(client) == 1


def test_version_that_fails_to_load_leaves_serving_untouched(
    server: ServerThread, admin: AdminClient
) -> None:
    with Hammer(server.address, threads=2) as hammer:
        with pytest.raises(InferenceServerError) as info:
            admin.set_stage("plus", 5, "staging")
        assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert "could not be loaded" in info.value.details
        with pytest.raises(InferenceServerError) as info:
            admin.set_stage("plus", 9, "staging")  # no such version on disk
        assert "not in the repository" in info.value.details
        wait_for(lambda: len(hammer.versions) > 50)
    assert hammer.failures == [] and set(hammer.versions) == {1}
    (route,) = admin.routes("plus")
    assert route.get("revision", 0) == 0
    assert [(s["version"], s.get("ready", False)) for s in route["stages"]] == [(1, True)]


def test_admin_requests_are_validated(admin: AdminClient) -> None:
    stub_calls = [
        ("SetRoute", apb.SetRouteRequest(challenger=2)),
        ("SetStage", apb.SetStageRequest(model="plus", version=2)),
        ("Promote", apb.PromoteRequest()),
    ]
    for method, request in stub_calls:
        with pytest.raises(grpc.RpcError) as info:
            getattr(admin._stub, method)(request, timeout=30)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(ValueError, match="sideways"):
        admin.set_route("plus", 2, "sideways")
    with pytest.raises(ValueError, match="unknown guardrail"):
        admin.set_route("plus", 2, guardrails={"max_cpu": 1})


def test_admin_methods_list_every_admin_rpc() -> None:
    service = apb.DESCRIPTOR.services_by_name["ModelAdmin"]
    expected = {f"/{service.full_name}/{m.name}" for m in service.methods}
    assert expected <= set(ADMIN_METHODS)
    assert set(ADMIN_METHODS) - expected == {
        "/inference.GRPCInferenceService/RepositoryModelLoad",
        "/inference.GRPCInferenceService/RepositoryModelUnload",
    }


# --- replicas and restarts -------------------------------------------------------------


def test_replicas_share_one_state(make_server: MakeServer, repo: Path) -> None:
    a = start(make_server, repo)
    b = start(make_server, repo)
    with (
        admin_for(a) as admin_a,
        admin_for(b, "bob") as admin_b,
        InferenceClient(a.address) as ca,
        InferenceClient(b.address) as cb,
    ):
        if True:
            admin_a.set_stage("plus", 2, "staging")
            admin_a.promote("plus", 2)
            assert answer(ca) == 2
            # b loads the newly pinned v2 and follows within its poll interval.
            wait_for(lambda: answer(cb) == 2)
            admin_b.rollback("plus")
            assert answer(cb) == 1
            wait_for(lambda: answer(ca) == 1)
            assert admin_a.routes("plus")[0]["revision"] == admin_b.routes("plus")[0]["revision"]
            who = [(e["principal"], e["action"]) for e in admin_a.audit_log("plus")][::-1]
            assert who == [
                ("alice", "set_stage:staging"),
                ("alice", "promote"),
                ("bob", "rollback"),
            ]


def test_audit_lists_every_change_and_survives_a_restart(
    make_server: MakeServer, repo: Path
) -> None:
    first = start(make_server, repo)
    t0 = time.time()
    with admin_for(first) as alice, admin_for(first, "bob") as bob:
        with InferenceClient(first.address) as client:
            alice.set_stage("plus", 2, "staging", reason="candidate")
            alice.set_route("plus", 2, "canary", 0.2, reason="canary 20%")
            bob.promote("plus", reason="looks good")
            bob.rollback("plus", reason="pager went off")
            alice.set_stage("plus", 3, "staging")
            guard = {"max_error_ratio": 0.2, "min_requests": 3, "window_seconds": 30}
            alice.set_route("plus", 3, "canary", 0.5, guard)
            run_until_rolled_back(alice, client, X_FAILS)
            alice.set_stage("plus", 2, "staging", reason="retry later")
        before = alice.audit_log()
    first.stop()

    second = start(make_server, repo)
    with admin_for(second, "carol") as carol, InferenceClient(second.address) as client:
        after = carol.audit_log()
        assert after == before
        rows = [(e["principal"], e["action"], e["reason"]) for e in after[::-1]]
        assert rows == [
            ("alice", "set_stage:staging", "candidate"),
            ("alice", "set_route", "canary 20%"),
            ("bob", "promote", "looks good"),
            ("bob", "rollback", "pager went off"),
            ("alice", "set_stage:staging", ""),
            ("alice", "set_route", ""),
            ("system:guardrails", "guardrail_rollback", rows[6][2]),
            ("alice", "set_stage:staging", "retry later"),
        ]
        assert "error ratio" in rows[6][2]
        for entry in after:
            assert entry["model"] == "plus"
            stamp = time.mktime(time.strptime(entry["time"][:19], "%Y-%m-%dT%H:%M:%S"))
            assert t0 - 2 <= stamp - time.timezone <= time.time() + 2
            assert entry["before"] is not None and entry["after"] is not None
        promote = next(e for e in after if e["action"] == "promote")
        assert (promote["before"]["champion"], promote["after"]["champion"]) == (1, 2)
        # The state came back too: v1 champion, v2 staged and loaded at start.
        (route,) = carol.routes("plus")
        assert (route["champion"], route.get("challenger", 0)) == (1, 0)
        assert {s["version"]: (s["stage"], s.get("ready", False)) for s in route["stages"]} == {
            1: ("STAGE_PRODUCTION", True),
            2: ("STAGE_STAGING", True),
            3: ("STAGE_ARCHIVED", False),
        }
        assert answer(client) == 1


def test_audit_dir_apart_from_the_state(
    make_server: MakeServer, repo: Path, tmp_path: Path
) -> None:
    server = start(make_server, repo, audit_dir=tmp_path / "audit")
    with admin_for(server) as admin:
        admin.set_stage("plus", 2, "staging")
        assert [e["action"] for e in admin.audit_log()] == ["set_stage:staging"]
    assert (tmp_path / "audit" / "audit.sqlite").is_file()
    assert (repo / ".inferd" / "routes.json").is_file()
    assert not (repo / ".inferd" / "audit.sqlite").exists()


def test_bad_state_file_never_stops_serving(make_server: MakeServer, repo: Path) -> None:
    """A corrupt routes.json (a bad hand edit, a half-synced ConfigMap) is
    reported; the server serves by the last good state, refuses changes until
    the file is fixed, and adopts the fixed file."""
    state = repo / ".inferd" / "routes.json"
    state.parent.mkdir()
    state.write_text("{oops")
    server = start(make_server, repo)
    with admin_for(server) as admin, InferenceClient(server.address) as client:
        assert answer(client) == 1
        with pytest.raises(InferenceServerError) as info:
            admin.set_stage("plus", 2, "staging")
        assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert "not valid JSON" in info.value.details
        assert str(repo) not in info.value.details
        fixed = {
            "format": 1,
            "revision": 3,
            "models": {"plus": {"champion": 2, "stages": {"2": "production"}}},
        }
        state.write_text(json.dumps(fixed))
        wait_for(lambda: answer(client) == 2)  # adopted, and v2 loaded for it
        assert admin.routes("plus")[0]["revision"] == 3
        assert admin.audit_log() == []


def test_read_only_state_refuses_changes_but_serves(
    make_server: MakeServer, repo: Path, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    server = start(make_server, repo, state_dir=blocker / "state")
    with admin_for(server) as admin, InferenceClient(server.address) as client:
        with pytest.raises(InferenceServerError) as info:
            admin.set_stage("plus", 2, "staging")
        assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert "change not made" in info.value.details
        assert answer(client) == 1
        # The version loaded for the refused change is unloaded again.
        assert [m["version"] for m in client.repository_index()] == ["1"]
