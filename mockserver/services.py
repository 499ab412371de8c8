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
    wake: Callable[[], None]
    """Tells the lifecycle worker and the callback dispatcher that work may be due."""
