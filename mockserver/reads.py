"""Reads of one row, answered again from memory while the store is unchanged.

A ``GET`` of a tune or a prompt is most of what polling clients send. Under load, the
SQLite read it needs cost more than everything else the request does: it touches enough
of SQLite's code and pages to run from cold caches between requests. ``Store.version()``
changes on every commit, of this process or any other, and costs a third of the read;
while it keeps its value, the row read last time is still the row.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

from .prepared import Stored
from .store import Store, Tx

REMEMBERED_ROWS = 1024


class RecentReads:
    """The last rows read, by what named them (tenant, ids), with the store's version."""

    def __init__(self, store: Store, size: int = REMEMBERED_ROWS) -> None:
        self._store = store
        self._size = size
        self._rows: dict[Hashable, tuple[tuple[int, int], Stored]] = {}

    def read(
        self,
        key: Hashable,
        fetch: Callable[[Tx], Stored],
        still: Callable[[Stored], bool] | None = None,
    ) -> Stored:
        """``fetch``'s row, read now or remembered from a read of the same version;
        ``still`` says whether a remembered row still holds (what time may change)."""
        version = self._store.version()
        if version is not None:
            found = self._rows.get(key)
            if found is not None and found[0] == version and (still is None or still(found[1])):
                return found[1]
        with self._store.read() as tx:
            stored = fetch(tx)
        if version is not None:
            if len(self._rows) >= self._size:
                del self._rows[next(iter(self._rows))]  # the oldest
            self._rows[key] = (version, stored)
        return stored
