"""LoopLoad: the event loop thread's recent share of time on CPU."""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path

import pytest

from inferd.server.app import InferdServer, ServerConfig
from inferd.server.scheduler.loop_load import LoopLoad


class _Clocks:
    def __init__(self) -> None:
        self.wall = 100.0
        self.cpu = 7.0

    def spend(self, wall: float, cpu: float) -> None:
        self.wall += wall
        self.cpu += cpu


def _load(clocks: _Clocks) -> LoopLoad:
    return LoopLoad(clock=lambda: clocks.wall, cpu=lambda: clocks.cpu)


def test_the_share_follows_the_cpu_time_over_wall_time() -> None:
    clocks = _Clocks()
    load = _load(clocks)
    assert load.share() == 0.0  # the first read starts the first sample
    clocks.spend(0.1, 0.08)
    keep = math.exp(-0.1 / LoopLoad.TAU_S)
    assert load.share() == pytest.approx(0.8 * (1 - keep))
    # Held at 80% for a few time constants, it reads 80%.
    for _ in range(40):
        clocks.spend(0.1, 0.08)
        load.share()
    assert load.share() == pytest.approx(0.8, abs=1e-3)
    # An idle spell brings it down.
    clocks.spend(1.0, 0.0)
    assert load.share() == pytest.approx(0.8 * math.exp(-1.0 / LoopLoad.TAU_S), abs=1e-3)


def test_reads_closer_than_a_sample_apart_change_nothing() -> None:
    clocks = _Clocks()
    load = _load(clocks)
    load.share()
    clocks.spend(0.1, 0.1)
    busy = load.share()
    clocks.spend(LoopLoad.SAMPLE_S / 2, 0.0)
    assert load.share() == busy  # too short to count: kept for the next sample
    clocks.spend(LoopLoad.SAMPLE_S / 2, 0.0)
    assert load.share() < busy  # the two halves make one idle sample


def test_the_share_stays_within_0_and_1() -> None:
    clocks = _Clocks()
    load = _load(clocks)
    load.share()
    clocks.spend(0.1, 0.5)  # CPU clocks tick coarser than wall clocks
    assert load.share() <= 1.0
    clocks.spend(0.1, -0.5)
    assert load.share() >= 0.0


def test_it_measures_the_thread_that_reads_it() -> None:
    load = LoopLoad()  # built here, read on a thread of its own, as the server does
    shares: list[float] = []

    def reader() -> None:
        load.share()
        time.sleep(0.3)  # idle here while the main thread spins
        shares.append(load.share())
        end = time.monotonic() + 0.3
        while time.monotonic() < end:  # busy here
            pass
        shares.append(load.share())

    thread = threading.Thread(target=reader)
    thread.start()
    end = time.monotonic() + 0.3
    while time.monotonic() < end:  # the main thread's CPU must not count
        pass
    thread.join()
    assert shares[0] < 0.1
    assert shares[1] > shares[0] + 0.05  # even with a share of a core on a loaded host


@pytest.mark.parametrize("enabled", [True, False])
async def test_the_server_shares_one_measure_between_its_models(
    demo_repository: Path, enabled: bool
) -> None:
    config = ServerConfig(
        model_repository=demo_repository,
        grpc_port=0,
        host="127.0.0.1",
        loop_bound_batching=enabled,
    )
    server = InferdServer(config)
    await server.start()
    try:
        loads = {
            id(server.dataplane.version(name).scheduler.loop_load)
            for name in ("digits_mlp", "dense_reference")
        }
        first = server.dataplane.version("digits_mlp").scheduler.loop_load
        if enabled:
            assert isinstance(first, LoopLoad) and len(loads) == 1
        else:
            assert first is None  # --loop-bound-batching false: never measured, never busy
    finally:
        await server.stop(0)
