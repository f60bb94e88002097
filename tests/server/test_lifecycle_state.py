"""The shared lifecycle state: its JSON form, the state file, and the gates."""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from inferd.server.errors import FailedPrecondition, InvalidArgument
from inferd.server.lifecycle import transitions as t
from inferd.server.lifecycle.state import (
    Guardrails,
    LifecycleState,
    ModelLifecycle,
    RouteMode,
    Stage,
    StateError,
    StateStore,
)

GUARD = Guardrails(window_s=30, min_requests=5, max_error_ratio=0.1)


def staged(**stages: str) -> ModelLifecycle:
    return ModelLifecycle(stages={int(k[1:]): Stage(v) for k, v in stages.items()})


# --- JSON ----------------------------------------------------------------------------


def test_state_round_trips_through_json() -> None:
    lifecycle = ModelLifecycle(
        champion=1,
        challenger=2,
        mode=RouteMode.AB,
        weight=0.25,
        guardrails=GUARD,
        previous=(3,),
        stages={1: Stage.PRODUCTION, 2: Stage.STAGING, 3: Stage.ARCHIVED},
        tripped="",
    )
    state = LifecycleState(revision=7, models={"plus": lifecycle})
    text = json.dumps(state.to_json())
    assert LifecycleState.from_json(json.loads(text)) == state


@pytest.mark.parametrize(
    ("document", "words"),
    [
        ([], "state must be a JSON object"),
        ({"format": 2}, "format 2"),
        ({"models": {"m": {"champion": -1}}}, "models.m.champion"),
        ({"models": {"m": {"champion": True}}}, "models.m.champion"),
        ({"models": {"m": {"mode": "sideways"}}}, "unknown route mode"),
        ({"models": {"m": {"weight": 1.5}}}, "models.m.weight"),
        ({"models": {"m": {"weight": "half"}}}, "models.m.weight must be a number"),
        ({"models": {"m": {"stages": {"x": "staging"}}}}, "not a version number"),
        ({"models": {"m": {"stages": {"1": "live"}}}}, "unknown stage 'live'"),
        ({"models": {"m": {"previous": [1, "2"]}}}, "previous"),
        ({"models": {"m": {"guardrails": {"min_requests": 0}}}}, "min_requests"),
        ({"models": {"m": {"guardrails": {"max_error_ratio": 2}}}}, "max_error_ratio"),
        ({"models": {"m": {"tripped": 3}}}, "tripped"),
    ],
)
def test_invalid_state_names_the_field(document: object, words: str) -> None:
    with pytest.raises(StateError, match=words):
        LifecycleState.from_json(document)


def test_pinned_versions() -> None:
    lifecycle = ModelLifecycle(
        champion=3,
        challenger=4,
        previous=(1, 2),
        stages={5: Stage.STAGING, 6: Stage.SHADOW, 7: Stage.DEVELOPMENT, 8: Stage.ARCHIVED},
    )
    # The rollback target (2) stays loaded, older champions (1) need not.
    assert lifecycle.pinned() == {2, 3, 4, 5, 6}
    assert ModelLifecycle().pinned() == set()


# --- the state file --------------------------------------------------------------------


def test_missing_file_is_an_empty_state(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state")
    assert store.read() == LifecycleState()
    assert store.stamp() is None
    assert not (tmp_path / "state").exists()  # reading creates nothing


def test_update_writes_atomically_and_bumps_the_revision(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    before, after = store.update(lambda s: s.with_model("m", ModelLifecycle(champion=1)))
    assert (before.revision, after.revision) == (0, 1)
    assert store.read() == after
    stamp = store.stamp()
    # A change that changes nothing writes nothing.
    again = store.update(lambda s: s)
    assert again == (after, after)
    assert store.stamp() == stamp
    # No temporary files are left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["routes.json", "routes.json.lock"]


def test_a_refused_change_or_commit_writes_nothing(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.update(lambda s: s.with_model("m", ModelLifecycle(champion=1)))

    def refuse(state: LifecycleState) -> LifecycleState:
        raise FailedPrecondition("no")

    with pytest.raises(FailedPrecondition):
        store.update(refuse)

    def failing_commit(before: LifecycleState, after: LifecycleState) -> None:
        raise OSError("audit log is full")

    with pytest.raises(OSError, match="audit"):
        store.update(lambda s: s.with_model("m", ModelLifecycle(champion=2)), failing_commit)
    assert store.read().model("m").champion == 1
    assert store.read().revision == 1


def test_concurrent_writers_lose_no_change(tmp_path: Path) -> None:
    """Writers with their own store objects (as replicas have) serialize on the
    file lock: every increment lands."""

    def bump(state: LifecycleState) -> LifecycleState:
        lifecycle = state.model("m")
        return state.with_model(
            "m", dataclasses.replace(lifecycle, champion=lifecycle.champion + 1)
        )

    def writer() -> None:
        store = StateStore(tmp_path)
        for _ in range(25):
            store.update(bump)

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    final = StateStore(tmp_path).read()
    assert final.model("m").champion == 100
    assert final.revision == 100


def test_a_lock_held_by_another_process_blocks_until_it_dies(tmp_path: Path) -> None:
    """The lock is the kernel's (flock): a writer in another process holds it
    off, and a holder killed with SIGKILL releases it without cleanup."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys, time\n"
            "f = open(sys.argv[1], 'a+b')\n"
            "fcntl.flock(f.fileno(), fcntl.LOCK_EX)\n"
            "print('held', flush=True)\n"
            "time.sleep(60)\n",
            str(tmp_path / "routes.json.lock"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        done = threading.Event()

        def write() -> None:
            StateStore(tmp_path).update(lambda s: s.with_model("m", ModelLifecycle(champion=1)))
            done.set()

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        assert not done.wait(0.5)  # held off by the other process
        assert StateStore(tmp_path).read().revision == 0
        holder.send_signal(signal.SIGKILL)
        assert done.wait(10)
    finally:
        holder.kill()
        holder.communicate()
    assert StateStore(tmp_path).read().model("m").champion == 1


def test_corrupt_file_is_reported(tmp_path: Path) -> None:
    (tmp_path / "routes.json").write_text("{not json")
    with pytest.raises(StateError, match="not valid JSON"):
        StateStore(tmp_path).read()


def test_unwritable_state_directory_is_reported(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StateError, match="cannot write"):
        StateStore(blocker / "state").update(
            lambda s: s.with_model("m", ModelLifecycle(champion=1))
        )


# --- gates -----------------------------------------------------------------------------


def route(current: ModelLifecycle, challenger: int, **kw: object) -> ModelLifecycle:
    args: dict[str, object] = {
        "model": "m",
        "challenger": challenger,
        "mode": RouteMode.CANARY,
        "weight": 0.1,
        "guardrails": Guardrails(),
        "serving": 1,
        "ready": {1, 2, 3},
    }
    args.update(kw)
    return t.set_route(current, **args)  # type: ignore[arg-type]


def test_first_route_pins_the_serving_version_as_production_champion() -> None:
    after = route(staged(v2="staging"), 2)
    assert (after.champion, after.challenger, after.weight) == (1, 2, 0.1)
    assert after.stage(1) is Stage.PRODUCTION


@pytest.mark.parametrize(
    ("current", "kw", "error", "words"),
    [
        (staged(v2="development"), {}, FailedPrecondition, "stage development"),
        (staged(v2="shadow"), {}, FailedPrecondition, "must be in staging"),
        (
            staged(v2="archived"),
            {"mode": RouteMode.SHADOW},
            FailedPrecondition,
            "shadow or staging",
        ),
        (staged(v2="staging"), {"ready": {1}}, FailedPrecondition, "not loaded and ready"),
        (staged(v2="staging"), {"weight": 1.5}, InvalidArgument, "weight"),
        (staged(v2="staging"), {"weight": float("nan")}, InvalidArgument, "weight"),
        (
            staged(v2="staging"),
            {"mode": RouteMode.SHADOW, "weight": 0.0},
            InvalidArgument,
            "mirror",
        ),
        (
            staged(v2="staging"),
            {"guardrails": Guardrails(max_error_ratio=2)},
            InvalidArgument,
            "ratio",
        ),
        (staged(v2="staging"), {"serving": 0}, FailedPrecondition, "no ready version"),
        (
            ModelLifecycle(champion=2, stages={2: Stage.PRODUCTION}),
            {},
            InvalidArgument,
            "is the champion",
        ),
    ],
)
def test_route_gates(
    current: ModelLifecycle, kw: dict[str, object], error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=words):
        route(current, 2, **kw)


def test_shadow_stage_may_shadow_but_not_answer() -> None:
    shadowing = route(staged(v2="shadow"), 2, mode=RouteMode.SHADOW, weight=1.0)
    assert shadowing.mode is RouteMode.SHADOW
    with pytest.raises(FailedPrecondition):
        route(staged(v2="shadow"), 2, mode=RouteMode.AB)


def test_blue_green_takes_no_traffic_and_clearing_resets_the_split() -> None:
    standby = route(staged(v2="staging"), 2, mode=RouteMode.BLUE_GREEN, weight=0.7)
    assert standby.weight == 0.0
    cleared = route(standby, 0)
    assert (cleared.champion, cleared.challenger, cleared.weight) == (1, 0, 0.0)
    assert cleared.stage(2) is Stage.STAGING


@pytest.mark.parametrize(
    ("was", "to", "ok"),
    [
        ("development", "staging", True),
        ("development", "shadow", False),
        ("staging", "shadow", True),
        ("shadow", "staging", True),
        ("shadow", "development", False),
        ("staging", "archived", True),
        ("archived", "staging", True),
        ("archived", "shadow", False),
    ],
)
def test_stage_moves(was: str, to: str, ok: bool) -> None:
    current = ModelLifecycle(stages={2: Stage(was)})
    if ok:
        assert t.set_stage(current, model="m", version=2, stage=Stage(to)).stage(2) is Stage(to)
    else:
        with pytest.raises(FailedPrecondition, match=f"from {was} to {to}"):
            t.set_stage(current, model="m", version=2, stage=Stage(to))


def test_stage_gates_protect_champion_and_challenger() -> None:
    current = route(staged(v2="staging"), 2)
    with pytest.raises(InvalidArgument, match="promote"):
        t.set_stage(current, model="m", version=3, stage=Stage.PRODUCTION)
    with pytest.raises(FailedPrecondition, match="is the champion"):
        t.set_stage(current, model="m", version=1, stage=Stage.ARCHIVED)
    with pytest.raises(FailedPrecondition, match="challenger"):
        t.set_stage(current, model="m", version=2, stage=Stage.ARCHIVED)
    assert t.set_stage(current, model="m", version=2, stage=Stage.STAGING) is current  # no-op


def test_promote_only_from_staging_and_ready() -> None:
    with pytest.raises(FailedPrecondition, match="only a staging version"):
        t.promote(staged(v2="development"), model="m", version=2, serving=1, ready={1, 2})
    with pytest.raises(FailedPrecondition, match="not loaded and ready"):
        t.promote(staged(v2="staging"), model="m", version=2, serving=1, ready={1})
    with pytest.raises(FailedPrecondition, match="no challenger"):
        t.promote(staged(v2="staging"), model="m", version=0, serving=1, ready={1, 2})
    with pytest.raises(FailedPrecondition, match="already the champion"):
        t.promote(staged(v2="staging"), model="m", version=1, serving=1, ready={1, 2})


def test_promote_then_rollback_restores_the_previous_champion() -> None:
    canary = route(staged(v2="staging"), 2)
    promoted = t.promote(canary, model="m", version=0, serving=1, ready={1, 2})
    assert (promoted.champion, promoted.challenger, promoted.previous) == (2, 0, (1,))
    assert (promoted.stage(2), promoted.stage(1)) == (Stage.PRODUCTION, Stage.ARCHIVED)
    back = t.rollback(promoted, model="m", ready={1, 2})
    assert (back.champion, back.previous) == (1, ())
    assert (back.stage(1), back.stage(2)) == (Stage.PRODUCTION, Stage.ARCHIVED)
    with pytest.raises(FailedPrecondition, match="no challenger and no previous"):
        t.rollback(back, model="m", ready={1, 2})


def test_rollback_refuses_a_target_that_is_not_ready() -> None:
    promoted = t.promote(staged(v2="staging"), model="m", version=2, serving=1, ready={1, 2})
    with pytest.raises(FailedPrecondition, match="version 1, is not loaded"):
        t.rollback(promoted, model="m", ready={2})


def test_rollback_with_a_challenger_drops_it_and_keeps_the_champion() -> None:
    canary = route(staged(v2="staging"), 2)
    back = t.rollback(canary, model="m", ready={1, 2})
    assert (back.champion, back.challenger, back.stage(2)) == (1, 0, Stage.ARCHIVED)


def test_guardrail_drop_is_idempotent_across_replicas() -> None:
    canary = route(staged(v2="staging"), 2)
    dropped = t.drop_challenger(canary, 2, "error ratio")
    assert (dropped.challenger, dropped.tripped, dropped.stage(2)) == (
        0,
        "error ratio",
        Stage.ARCHIVED,
    )
    # A second replica tripping on the same challenger changes nothing more.
    assert t.drop_challenger(dropped, 2, "p99") is dropped
    # A newer route is not undone by a late trip on an old challenger.
    newer = route(dataclasses.replace(dropped, stages={**dropped.stages, 3: Stage.STAGING}), 3)
    assert t.drop_challenger(newer, 2, "late") is newer
    assert route(dropped.staged({2: Stage.STAGING}), 2).tripped == ""


def test_history_is_bounded() -> None:
    current = ModelLifecycle(champion=1, stages={1: Stage.PRODUCTION})
    for v in range(2, 30):
        current = t.promote(
            current.staged({v: Stage.STAGING}), model="m", version=v, serving=1, ready={v}
        )
    assert len(current.previous) == 10
    assert current.previous[-1] == 28
