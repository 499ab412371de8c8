"""The store's WAL is checkpointed by its own thread: it stops growing, and nothing is lost."""

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


def test_the_log_is_checkpointed_off_the_commits_and_stops_growing(tmp_path: Path):
    path = tmp_path / "mock.sqlite3"
    store = Store(f"sqlite:///{path}", lambda: "2026-01-01T00:00:00.000Z")
    wal = Path(f"{path}-wal")
    try:
        _write(store, 0, 600)
        time.sleep(1.5)  # a checkpoint round or more
        after_first = wal.stat().st_size
        _write(store, 600, 600)
        time.sleep(1.5)
        after_second = wal.stat().st_size
        # Checkpointed, the log is written again from its start: the second batch reuses it.
        assert after_second < after_first * 1.5, (after_first, after_second)
    finally:
        store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM tunes WHERE tenant = 't'").fetchone() == (1200,)
