"""Reads answered from memory are never stale: any commit, of this process or another,
and the clock's passing are seen by the next read."""

from __future__ import annotations

import sqlite3
from datetime import timedelta

import pytest
from conftest import GALLERY_TUNE, jpeg, prompt_values

from mockserver.prepared import ANY_TABLE, written_table
from mockserver.reads import RecentReads


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


def test_prompts_tagging_a_tune_see_it_deleted_or_expired(make_api, tmp_path):
    api = make_api(ephemeral=False, data_dir=tmp_path, clock="frozen:2024-01-01T00:00:00Z")
    gone, expiring = api.faceid_tune("Gone", jpeg()), api.faceid_tune("Expiring", jpeg())

    def create(tune):
        text = f"<faceid:{tune['id']}:1> a portrait"
        return api.post("/tunes/690204/prompts", json={"prompt": {"text": text}})

    assert create(gone).status_code == 201
    assert create(expiring).status_code == 201  # both tunes are remembered now
    assert api.delete(f"/tunes/{gone['id']}").status_code == 200
    assert "does not exist" in create(gone).json()["text"][0]
    api.client.app.state.services.clock.advance(timedelta(days=31))  # nothing commits
    assert "does not exist" in create(expiring).json()["text"][0]


def test_a_prompt_sees_its_tune_changed_by_another_process(disk_api, tmp_path):
    tune = disk_api.faceid_tune("Face", jpeg())
    body = {"prompt": {"text": f"<faceid:{tune['id']}:1> a portrait"}}
    assert disk_api.post("/tunes/690204/prompts", json=body).status_code == 201
    other = sqlite3.connect(tmp_path / "mock.sqlite3")
    with other:
        other.execute("UPDATE tunes SET model_type = 'lora' WHERE id = ?", (tune["id"],))
    refused = disk_api.post("/tunes/690204/prompts", json=body)
    assert refused.status_code == 422
    assert "not a FaceID tune" in refused.json()["text"][0]
    other.close()


def test_a_row_is_read_once_while_nothing_commits(store):
    reads = RecentReads(store)
    fetched: list[int] = []

    def fetch(tx):
        fetched.append(1)
        return tx.stored_tune("", 690204) or pytest.fail("no gallery tune")

    reads.read("tunes", "tune", fetch)
    reads.read("tunes", "tune", fetch)
    assert len(fetched) == 1
    with store.begin() as tx:
        tx.update_tune(690204, title="renamed")
    assert reads.read("tunes", "tune", fetch).row()["title"] == "renamed"
    assert len(fetched) == 2


def test_a_tune_stays_remembered_while_only_prompts_are_written(store):
    reads = RecentReads(store)
    fetched: list[int] = []

    def fetch(tx):
        fetched.append(1)
        return tx.stored_tune("", 690204)

    reads.read("tunes", "gallery", fetch)
    with store.begin() as tx:  # a prompt create's writes: a counter and a prompt
        tx.insert_prompt(prompt_values(tx.next_id("prompts")))
    with store.begin() as tx:  # and read from within a create
        assert reads.read("tunes", "gallery", fetch, tx=tx) is not None
        tx.insert_prompt(prompt_values(tx.next_id("prompts")))
    reads.read("tunes", "gallery", fetch)
    assert len(fetched) == 1

    with store.begin() as tx:  # a statement SQLAlchemy runs
        tx.update_tune(690204, title="renamed")
    assert reads.read("tunes", "gallery", fetch).row()["title"] == "renamed"
    with store.begin() as tx:  # a prepared statement
        tx.insert_tune({**GALLERY_TUNE, "id": 7, "tenant": "t", "auto_extend": False})
    reads.read("tunes", "gallery", fetch)
    assert len(fetched) == 3


def test_a_row_read_after_its_table_was_written_is_not_remembered(store):
    """Rolled back, the write changes no version: a row remembered from it would be stale."""
    reads = RecentReads(store)

    def fetch(tx):
        return tx.stored_tune("", 690204)

    def refused_rename():
        with store.begin() as tx:
            tx.update_tune(690204, title="rolled back")
            assert reads.read("tunes", "gallery", fetch, tx=tx).row()["title"] == "rolled back"
            raise RuntimeError("refused")

    with pytest.raises(RuntimeError):
        refused_rename()
    assert reads.read("tunes", "gallery", fetch).row()["title"] == "t"


@pytest.mark.parametrize(
    ("sql", "table"),
    [
        ("SELECT tunes.id FROM tunes", None),
        ("PRAGMA data_version", None),
        ("  INSERT INTO prompts (id) VALUES (?)", "prompts"),
        ('INSERT OR IGNORE INTO "tunes" (id) VALUES (?)', "tunes"),
        ("UPDATE counters SET value=(counters.value + ?) RETURNING value", "counters"),
        ("delete from Tunes where id = 1", "tunes"),
        ("WITH doomed AS (SELECT 1) DELETE FROM tunes", ANY_TABLE),
        ("DROP TABLE tunes_v3", ANY_TABLE),
    ],
)
def test_the_table_a_statement_writes(sql, table):
    assert written_table(sql) == table
