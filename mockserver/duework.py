"""The loop shared by the lifecycle worker and the callback dispatcher."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import anyio

RETRY_AFTER_FAILURE = 1.0
POLL_SECONDS = 0.5
"""The longest sleep where other processes share the database: their new work cannot
wake this process, so it looks again at least this often."""


async def run_when_due(
    work: Callable[[], Awaitable[float | None]],
    wakeup: asyncio.Event,
    log: logging.Logger,
    poll: float | None = None,
) -> None:
    """Forever: ``work()`` does what is due and says when more is (epoch seconds, or None);
    then sleep until that time, until ``wakeup`` is set, or at most ``poll`` seconds. A
    failing pass is logged and retried, so one bad row never stops the loop."""
    while True:
        wakeup.clear()
        try:
            next_due = await work()
        except Exception:
            log.exception("pass failed; retrying in %s s", RETRY_AFTER_FAILURE)
            next_due = time.time() + RETRY_AFTER_FAILURE
        timeout = None if next_due is None else max(0.0, next_due - time.time())
        if poll is not None:
            timeout = poll if timeout is None else min(timeout, poll)
        with anyio.move_on_after(timeout):
            await wakeup.wait()


async def keep_claim(renew: Callable[[float], None], lease: float) -> None:
    """Until cancelled, every third of ``lease``: ``renew(until)`` pushes a claim's end
    ``lease`` seconds ahead, so work that takes long is not taken over while it runs."""
    while True:
        await anyio.sleep(lease / 3)
        renew(time.time() + lease)
