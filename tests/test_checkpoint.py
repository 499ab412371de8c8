"""The store's WAL is checkpointed by its own thread while it runs, and nothing is lost."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from mockserver.store import Store

ROW_TEXT = "x" * 2000  # about half a page per transaction


def _write(store: Store, first: int, count: int) -> None:
    for index in range(first, first + count):
        with store.begin() as tx:
            tx.insert_tune(
                {
                    "id": 1_000 + index,
                    "tenant": "t",
                    "title": f"{ROW_TEXT} {index}",
                    "model_type": "faceid",
                    "branch": "sd15",
                    "attrs": {},
                    "orig_images": [],
                    "created_at": "2026-01-01T00:00:00.000Z",
                    "updated_at": "2026-01-01T00:00:00.000Z",
                }
            )


def test_the_log_is_checkpointed_into_the_database_while_the_store_runs(tmp_path: Path):
    path = tmp_path / "mock.sqlite3"
    store = Store(f"sqlite:///{path}", lambda: "2026-01-01T00:00:00.000Z")
    try:
        empty = path.stat().st_size
        _write(store, 0, 1200)  # about 2.4 MB of rows, one transaction each
        # Commits only append to the WAL (wal_autocheckpoint=0); the rows reach the
        # database file when the store's own thread checkpoints, within a round or two.
        deadline = time.monotonic() + 5
        while path.stat().st_size < empty + 2_000_000 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert path.stat().st_size >= empty + 2_000_000
    finally:
        store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM tunes WHERE tenant = 't'").fetchone() == (1200,)
