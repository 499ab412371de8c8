"""Wake-ups of the background workers, coalesced under load.

A created tune or prompt tells the lifecycle and the dispatcher that work may be due
(``Services.wake``). Each wake-up costs each of them a pass of queries on the event loop
(a lifecycle pass took about 5 ms with a few thousand prompts pending); at a wake-up per
create, those passes took a third of the loop. One pass serves every create committed
before it starts, so a wake-up within ``interval`` of the last one is held until
``interval`` after it, merged with any others meanwhile. None is lost, and none is late
by more than ``interval`` (20 ms: nothing is due sooner than ``--prompt-seconds``).

A wake-up may say when its work is due (epoch seconds; None: now). Merged wake-ups pass
on the earliest, so the woken side can ignore work due after its next pass anyway.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable

INTERVAL = 0.02
"""Seconds: the most a wake-up waits for the one before it to have been acted on."""


class CoalescedWake:
    """``wake(at)`` as given, called at most once per ``interval`` (on the event loop)."""

    def __init__(
        self,
        wake: Callable[[float | None], None],
        interval: float = INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._wake = wake
        self.interval = interval
        self._clock = clock
        self._last = -math.inf
        self._timer: asyncio.TimerHandle | None = None
        self._at: float | None = None

    def __call__(self, at: float | None = None) -> None:
        if self._timer is not None:  # a wake-up is on its way: it carries this one too
            self._at = None if at is None or self._at is None else min(at, self._at)
            return
        self._at = at
        wait = self._last + self.interval - self._clock()
        if wait <= 0:
            self._fire()
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not on a loop (startup, a thread): at once
            self._fire()
            return
        self._timer = loop.call_later(wait, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._last = self._clock()
        self._wake(self._at)
