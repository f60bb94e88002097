"""A version's health on its own: failures in a row, the probe, recovery."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from inferd.server.errors import Unavailable
from inferd.server.scheduler.health import Health
from inferd.server.scheduler.options import BatchingOptions
from inferd.server.scheduler.slots import Slots


class Probe:
    """A synthetic call that fails while ``failing`` is set."""

    def __init__(self) -> None:
        self.failing = True
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1
        if self.failing:
            raise RuntimeError("engine broken")


def make_health(
    probe: Callable[[], object] | None, slots: Slots | None = None
) -> tuple[Health, list[str]]:
    events: list[str] = []
    options = BatchingOptions(failure_threshold=3, probe_interval_s=0.01, engine_timeout_s=1.0)
    health = Health(
        "m",
        options,
        slots or Slots(1, "m", lambda: None),
        probe,
        on_change=lambda: events.append("healthy" if health.healthy else "unhealthy"),
        on_unhealthy=lambda error: events.append(f"fail queued: {type(error).__name__}"),
        on_recovered=lambda: events.append("wake"),
        closing=lambda: False,
    )
    return health, events


async def settle(health: Health) -> None:
    for _ in range(500):
        if health.task is None:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("health task still running")


async def test_failures_in_a_row_with_a_failing_probe_mark_unhealthy_then_recover() -> None:
    probe = Probe()
    health, events = make_health(probe)
    health.batch_failed()
    health.batch_failed()
    assert health.task is None and probe.calls == 0  # below the threshold
    health.batch_failed()
    assert health.task is not None
    for _ in range(500):
        if not health.healthy:
            break
        await asyncio.sleep(0.01)
    assert not health.healthy and "3 failed batches in a row" in health.reason
    assert events == ["fail queued: Unavailable", "unhealthy"]
    error = health.error()
    assert isinstance(error, Unavailable) and health.reason in str(error)
    probe.failing = False
    await settle(health)
    assert health.healthy and health.reason == "" and health.failures == 0
    assert events[2:] == ["healthy", "wake"]
    health.slots.shutdown()


async def test_a_passing_probe_after_failures_keeps_the_version_healthy() -> None:
    probe = Probe()
    probe.failing = False
    health, events = make_health(probe)
    for _ in range(3):
        health.batch_failed()
    await settle(health)
    assert health.healthy and health.failures == 0 and probe.calls == 1 and events == []
    health.slots.shutdown()


async def test_a_success_resets_the_count_of_failures_in_a_row() -> None:
    health, _ = make_health(Probe())
    health.batch_failed()
    health.batch_failed()
    health.batch_succeeded()
    health.batch_failed()
    assert health.task is None and health.failures == 1


async def test_no_free_slot_means_the_probe_cannot_pass() -> None:
    probe = Probe()
    probe.failing = False
    slots = Slots(1, "m", lambda: None)
    slots.free = 0  # every slot busy (or hung)
    health, _ = make_health(probe, slots)
    assert not await health.probe_once() and probe.calls == 0
    slots.free = 1
    assert await health.probe_once() and probe.calls == 1
    slots.shutdown()


async def test_without_a_probe_recovery_waits_for_hung_calls_to_return() -> None:
    slots = Slots(1, "m", lambda: None)
    health, _ = make_health(None, slots)
    slots.hung.add(7)
    assert not await health.probe_once()
    slots.hung.clear()
    assert await health.probe_once()
