"""The API clock: real or frozen, with an offset that the admin API can advance.

The clock gives the timestamps written into tunes and prompts. When work becomes
due (training, generation) is measured separately, in real seconds, so that a
frozen clock still lets prompts finish while every timestamp stays fixed.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

MICROSECOND = timedelta(microseconds=1)


class Clock:
    """``now()`` is the frozen instant (or the real time) plus an adjustable offset."""

    def __init__(self, frozen_at: datetime | None = None) -> None:
        self._frozen_at = frozen_at
        self._offset = timedelta()
        self._lock = threading.Lock()
        self._stamped: tuple[tuple[int | None, timedelta], str] = ((None, timedelta.max), "")
        """The last stamp, by its millisecond (None: frozen) and the offset then."""
        self._second_text: tuple[int | None, str] = (None, "")

    @property
    def frozen(self) -> bool:
        return self._frozen_at is not None

    def now(self) -> datetime:
        base = self._frozen_at if self._frozen_at is not None else datetime.now(UTC)
        return base + self._offset

    def stamp(self) -> str:
        """Now, as the API writes timestamps (``iso(now())``). Formatting a datetime cost
        more than the store read it serves (expiry): the text of each millisecond is made
        once, from the text of its second."""
        frozen, millisecond = self._frozen_at, time.time_ns() // 1_000_000
        key = (None if frozen is not None else millisecond, self._offset)
        if self._stamped[0] != key:
            if frozen is not None:
                text = _format(frozen + self._offset)
            else:
                shifted = (millisecond * 1000 + self._offset // MICROSECOND) // 1000
                text = f"{self._second(shifted // 1000)}.{shifted % 1000:03d}Z"
            self._stamped = (key, text)
        return self._stamped[1]

    def _second(self, epoch_second: int) -> str:
        """``YYYY-MM-DDTHH:MM:SS`` of a second since the epoch, kept for the next stamp."""
        if self._second_text[0] != epoch_second:
            moment = datetime.fromtimestamp(epoch_second, UTC).replace(tzinfo=None)
            self._second_text = (epoch_second, moment.isoformat(timespec="seconds"))
        return self._second_text[1]

    def advance(self, delta: timedelta) -> datetime:
        with self._lock:
            self._offset += delta
        return self.now()


def parse_clock(spec: str) -> Clock:
    """Build a clock from ``real`` or ``frozen:<ISO 8601 time>``."""
    if spec == "real":
        return Clock()
    kind, _, value = spec.partition(":")
    if kind != "frozen" or not value:
        raise ValueError(f"clock must be 'real' or 'frozen:<ISO time>', not {spec!r}")
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"clock: {value!r} is not an ISO 8601 time") from exc
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return Clock(at.astimezone(UTC))


def iso(moment: datetime | None) -> str | None:
    """ISO 8601 in UTC with milliseconds, as the API writes it: ``2023-10-02T14:32:40.363Z``."""
    return None if moment is None else _format(moment)


def _format(moment: datetime) -> str:
    utc = moment.astimezone(UTC).replace(tzinfo=None)
    return utc.isoformat(timespec="milliseconds") + "Z"
