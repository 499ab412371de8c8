"""What a request handler works with, built once per app."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .callbacks import Outbox
from .clock import Clock
from .contract import Contract
from .faults import Faults
from .files import FileStore
from .ratelimit import RateLimiter
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
