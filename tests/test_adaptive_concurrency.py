"""AIMD state machine of synthesis/adaptive_concurrency.py, driven with a fake clock."""

from __future__ import annotations

import asyncio
import threading

import pytest

from synthesis.adaptive_concurrency import AdaptiveLimit


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def finish(limit: AdaptiveLimit, clock: Clock, latency: float, outcome: str, count: int = 1) -> None:
    async def run() -> None:
        slots = [await limit.acquire() for _ in range(count)]
        clock.now += latency
        for slot in slots:
            getattr(slot, outcome)()
            limit.release(slot)

    asyncio.run(run())


def test_slow_start_doubles_per_round_then_stops_at_the_ceiling() -> None:
    clock = Clock()
    limit = AdaptiveLimit(ceiling=20, initial=2, clock=clock)
    levels = []
    for _ in range(5):
        finish(limit, clock, 0.1, "ok", count=limit.level)
        levels.append(limit.level)
    assert levels == [4, 8, 16, 20, 20]


def test_overload_halves_once_per_round_trip_then_grows_additively() -> None:
    clock = Clock()
    limit = AdaptiveLimit(ceiling=64, initial=16, clock=clock)

    async def storm() -> None:
        slots = [await limit.acquire() for _ in range(16)]  # all started before any refusal
        clock.now += 0.1
        for slot in slots:
            slot.overload()
            limit.release(slot)

    asyncio.run(storm())
    assert limit.level == 8 and limit.decreases == 1 and not limit.slow_start
    finish(limit, clock, 0.1, "ok", count=8)  # one round of successes: about +1
    assert limit.level == 8 or limit.level == 9
    finish(limit, clock, 0.1, "ok", count=limit.level)
    assert limit.level == 9 or limit.level == 10
    finish(limit, clock, 0.1, "overload")
    assert limit.level in (4, 5)


def test_latency_inflation_backs_off_and_the_floor_holds() -> None:
    clock = Clock()
    limit = AdaptiveLimit(ceiling=32, initial=8, floor=2, clock=clock)
    finish(limit, clock, 0.1, "ok", count=8)
    before = limit.level
    finish(limit, clock, 0.5, "ok")  # 5x the best latency seen: the queue is building up
    assert limit.level == before // 2
    for _ in range(6):
        finish(limit, clock, 0.1, "overload")
    assert limit.level == 2


def test_unjudged_slots_change_nothing_and_levels_are_recorded() -> None:
    clock = Clock()
    limit = AdaptiveLimit(ceiling=8, initial=4, clock=clock)

    async def neutral() -> None:
        async with limit.slot():
            clock.now += 1

    asyncio.run(neutral())
    assert limit.level == 4 and limit.in_flight == 0
    finish(limit, clock, 0.1, "ok", count=4)
    summary = limit.summary()
    assert summary["concurrency_level"] == 8 and summary["backoffs"] == 0
    assert [level for _, level in limit.levels] == [4, 5, 6, 7, 8]


def test_the_window_bounds_in_flight_requests_across_threads() -> None:
    limit = AdaptiveLimit(ceiling=3, initial=3)
    peak = [0]
    lock = threading.Lock()

    async def worker() -> None:
        async def one() -> None:
            async with limit.slot() as slot:
                with lock:
                    peak[0] = max(peak[0], limit.in_flight)
                await asyncio.sleep(0.005)
                slot.ok()

        await asyncio.gather(*(one() for _ in range(20)))

    threads = [threading.Thread(target=lambda: asyncio.run(worker())) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert peak[0] <= 3 and limit.in_flight == 0


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError):
        AdaptiveLimit(ceiling=0)
    with pytest.raises(ValueError):
        AdaptiveLimit(ceiling=4, floor=5)


def test_a_long_answer_is_compared_with_answers_of_its_own_size():
    clock = Clock()
    limit = AdaptiveLimit(ceiling=32, initial=8, clock=clock)

    async def answer(latency: float, size: int) -> None:
        slot = await limit.acquire()
        clock.now += latency
        slot.ok(size)
        limit.release(slot)

    asyncio.run(answer(0.5, 20))  # a short tool call
    asyncio.run(answer(5.0, 2000))  # a long answer: ten times slower, not an overload
    assert limit.decreases == 0
    asyncio.run(answer(5.0, 20))  # a short answer as slow as the long one: latency inflation
    assert limit.decreases == 1
