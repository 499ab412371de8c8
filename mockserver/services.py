"""What a request handler works with, built once per app."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import anyio

from .callbacks import Outbox
from .clock import Clock
from .contract import Contract
from .faults import Faults
from .files import FileStore
from .ratelimit import RateLimiter
from .reads import RecentReads
from .settings import Settings
from .store import Store


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    contract: Contract
    store: Store
    files: FileStore
    clock: Clock
    outbox: Outbox
    faults: Faults
    limiter: RateLimiter | None
    wake: Callable[[float | None], None]
    """Tells the background workers that work is due at a time (epoch seconds), or now
    (None): ``Runtime.wake``, coalesced."""
    reads: RecentReads
    """Tunes and prompts read lately, answered again while the store is unchanged."""
    upload_thread: anyio.CapacityLimiter
    """The worker thread that checks and stages uploads, one tune at a time. The work is
    mostly Python (Pillow's header parsing, paths), so threads doing it side by side only
    took turns holding the GIL: with four creates in flight, one thread cut the CPU of
    that work by about a quarter, and the slowest creates' time (p99) by about a tenth."""
