"""Reads of one row, answered again from memory while the store is unchanged.

A ``GET`` of a tune or a prompt is most of what polling clients send, and a prompt's
create reads its tune and each tune it tags. Under load, the SQLite read cost more than
everything else a ``GET`` does: it touches enough of SQLite's code and pages to run from
cold caches between requests. ``Store.version(table)`` changes on every commit of this
process that wrote the table and on every commit of any other connection, and costs a
third of the read; while it keeps its value, the row read last time is still the row.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import TypeVar, cast

from .prepared import Stored
from .store import Store, Tx, Version

REMEMBERED_ROWS = 1024
Found = TypeVar("Found", bound=Stored | None)


class RecentReads:
    """The last rows read, by what named them (tenant, ids), with the store's version."""

    def __init__(self, store: Store, size: int = REMEMBERED_ROWS) -> None:
        self.store = store
        self._size = size
        self._rows: dict[Hashable, tuple[Version, Stored]] = {}

    def read(
        self,
        table: str,
        key: Hashable,
        fetch: Callable[[Tx], Found],
        still: Callable[[Stored], bool] | None = None,
        tx: Tx | None = None,
    ) -> Found:
        """``fetch``'s row of ``table``, read now or remembered from a read of the same
        version; ``still`` says whether a remembered row still holds (what time may change).

        Inside a write transaction ``tx``, the row is remembered from (or read within)
        the version the transaction began at, until ``tx`` writes to its table: from then
        on it is read, as ``tx`` sees it, and not remembered (were the transaction to roll
        back, no commit would change the version to forget it). A row that is not found
        (None) is not remembered.
        """
        if tx is not None and tx.has_written(table):
            return fetch(tx)
        version = self.store.version(table) if tx is None else tx.version(table)
        if version is not None:
            found = self._rows.get(key)
            if found is not None and found[0] == version and (still is None or still(found[1])):
                return cast(Found, found[1])
        if tx is None:
            with self.store.read() as read:
                stored = fetch(read)
        else:
            stored = fetch(tx)
        if version is not None and stored is not None:
            if len(self._rows) >= self._size:
                del self._rows[next(iter(self._rows))]  # the oldest
            self._rows[key] = (version, stored)
        return stored
