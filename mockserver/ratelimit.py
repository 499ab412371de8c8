"""Per-key rate limiting (``--rate-limit 10/s``): a token bucket for each tenant."""

from __future__ import annotations

import math
import re
import threading
import time
from dataclasses import dataclass

PERIODS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_SPEC = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*([smh])\s*$")


@dataclass(frozen=True, slots=True)
class Rate:
    requests: int
    per_seconds: float

    @classmethod
    def parse(cls, text: str) -> Rate:
        """``10/s``, ``600/m``, ``100/10s``."""
        match = _SPEC.match(text)
        if match is None or int(match.group(1)) < 1:
            raise ValueError(f"rate limit must look like 10/s, 600/m or 100/10s, not {text!r}")
        count, multiple, unit = match.groups()
        return cls(int(count), (int(multiple) if multiple else 1) * PERIODS[unit])


class RateLimiter:
    def __init__(self, rate: Rate) -> None:
        self.rate = rate
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, tenant: str) -> int | None:
        """Spend one token; None when allowed, else the whole seconds to wait."""
        refill = self.rate.requests / self.rate.per_seconds
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(tenant, (float(self.rate.requests), now))
            tokens = min(float(self.rate.requests), tokens + (now - last) * refill)
            if tokens >= 1:
                self._buckets[tenant] = (tokens - 1, now)
                return None
            self._buckets[tenant] = (tokens, now)
            return max(1, math.ceil((1 - tokens) / refill))
