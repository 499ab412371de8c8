"""SQLite's WAL checkpoints, in a thread of their own rather than inside commits.

In WAL mode SQLite checkpoints by default inside the commit that grows the log past
1,000 pages: that commit copies the logged pages into the database file and fsyncs it.
The mock commits on the event loop, so every few hundred creates one request waited
for an fsync, and that fsync also waited for whatever else the process had written
(a tune's uploads): the slowest requests were these. With automatic checkpoints off
(``wal_autocheckpoint=0`` on the store's connections), this thread checkpoints on its
own connection every ``interval`` seconds; a ``PASSIVE`` checkpoint never blocks
readers or writers. Each process on the same database runs one; that is safe.
"""

from __future__ import annotations

import logging
import sqlite3
import threading

log = logging.getLogger("astria_mock.store")
INTERVAL = 0.5


class Checkpointer:
    def __init__(self, path: str, interval: float = INTERVAL) -> None:
        self.path = path
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stop, after a last checkpoint."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        connection = sqlite3.connect(self.path, isolation_level=None)
        try:
            connection.execute("PRAGMA busy_timeout=10000")
            while not self._stop.wait(self.interval):
                self._checkpoint(connection)
            self._checkpoint(connection)
        finally:
            connection.close()

    @staticmethod
    def _checkpoint(connection: sqlite3.Connection) -> None:
        try:
            connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as exc:  # the next round tries again
            log.warning("WAL checkpoint failed: %s", exc)
