"""Reads answered from memory are never stale: any commit, of this process or another,
and the clock's passing are seen by the next read."""

from __future__ import annotations

import sqlite3
from datetime import timedelta

import pytest
from conftest import jpeg

from mockserver.reads import RecentReads
from mockserver.store import Store


@pytest.fixture
def disk_api(make_api, tmp_path):
    return make_api(ephemeral=False, data_dir=tmp_path)


def test_a_remembered_tune_expires_with_the_clock(make_api):
    api = make_api(clock="frozen:2024-01-01T00:00:00Z")
    tune = api.faceid_tune("plain")
    assert api.get(f"/tunes/{tune['id']}").status_code == 200
    assert api.get(f"/tunes/{tune['id']}").status_code == 200
    # Time passes and nothing commits (the admin endpoint would write: bring work forward).
    api.client.app.state.services.clock.advance(timedelta(days=31))
    assert api.get(f"/tunes/{tune['id']}").status_code == 404


def test_a_change_by_another_process_is_seen(disk_api, tmp_path):
    tune = disk_api.faceid_tune("Before", jpeg())
    url = f"/tunes/{tune['id']}"
    assert disk_api.get(url).json()["title"] == "Before"
    assert disk_api.get(url).json()["title"] == "Before"

    other = sqlite3.connect(tmp_path / "mock.sqlite3")  # as a replica would write
    with other:
        other.execute("UPDATE tunes SET title = 'After' WHERE id = ?", (tune["id"],))
    assert disk_api.get(url).json()["title"] == "After"
    with other:
        other.execute("DELETE FROM tunes WHERE id = ?", (tune["id"],))
    assert disk_api.get(url).status_code == 404
    other.close()


def test_changes_through_the_api_are_seen(disk_api):
    created = disk_api.post("/tunes/690204/prompts", json={"prompt": {"text": "a boat"}}).json()
    url = f"/tunes/690204/prompts/{created['id']}"
    assert disk_api.get(url).json()["trained_at"] is None
    assert disk_api.get(f"/prompts/{created['id']}").json()["liked"] is False

    disk_api.complete(created["id"])
    assert disk_api.get(url).json()["trained_at"] is not None
    disk_api.post(f"/prompts/{created['id']}/likes")
    assert disk_api.get(f"/prompts/{created['id']}").json()["liked"] is True
    disk_api.delete(url)
    assert disk_api.get(url).status_code == 404


def test_a_row_is_read_once_while_nothing_commits(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'mock.sqlite3'}", lambda: "2026-01-01T00:00:00.000Z")
    reads = RecentReads(store)
    fetched: list[int] = []

    def fetch(tx):
        fetched.append(1)
        return tx.stored_tune("", 690204) or pytest.fail("no gallery tune")

    with store.begin() as tx:
        tx.ensure_tune(
            {"id": 690204, "tenant": "", "title": "t", "model_type": None, "branch": "sd15",
             "attrs": {}, "orig_images": [], "created_at": "x", "updated_at": "x"}
        )  # fmt: skip
    reads.read("tune", fetch)
    reads.read("tune", fetch)
    assert len(fetched) == 1
    with store.begin() as tx:
        tx.update_tune(690204, title="renamed")
    assert reads.read("tune", fetch).row()["title"] == "renamed"
    assert len(fetched) == 2
    store.close()
