"""Coalesced wake-ups: at once when none was recent, else held (merged) and never lost."""

from __future__ import annotations

import asyncio

from mockserver.wakeup import CoalescedWake


def test_a_lone_wake_up_is_immediate_and_a_burst_becomes_one_more():
    async def burst() -> list[float]:
        loop = asyncio.get_running_loop()
        woken: list[float] = []
        wake = CoalescedWake(lambda _at: woken.append(loop.time()), interval=0.05)
        started = loop.time()
        wake()
        assert len(woken) == 1  # nothing recent: at once
        for _ in range(100):
            wake()  # held: one more wake-up for all of them
        assert len(woken) == 1
        await asyncio.sleep(0.2)
        assert len(woken) == 2
        assert woken[1] - started >= 0.045  # not before the interval ran out
        wake()  # the last one was long enough ago
        assert len(woken) == 3
        return woken

    assert len(asyncio.run(burst())) == 3


def test_off_the_loop_it_wakes_at_once():
    woken: list[int] = []
    wake = CoalescedWake(lambda _at: woken.append(1), interval=60)
    wake()
    wake()
    assert woken == [1, 1]


def test_merged_wake_ups_pass_on_the_earliest_due_time():
    async def merged() -> list[float | None]:
        told: list[float | None] = []
        wake = CoalescedWake(told.append, interval=0.05)
        wake(500.0)  # at once
        wake(300.0)  # held, with the two below
        wake(200.0)
        wake(400.0)
        await asyncio.sleep(0.2)
        wake(100.0)  # at once again
        wake(700.0)  # held: work due now wins
        wake(None)
        await asyncio.sleep(0.2)
        return told

    assert asyncio.run(merged()) == [500.0, 200.0, 100.0, None]
