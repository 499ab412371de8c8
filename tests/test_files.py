"""Image files on disk: uploads are stored once per content, and go with their last key."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from conftest import jpeg

from mockserver.files import BLOBS, STAGING, DirectoryFileStore


def blobs(root: Path) -> list[Path]:
    return sorted(path for path in (root / BLOBS).rglob("*") if path.is_file())


def test_equal_uploads_are_stored_once_and_read_under_each_key(tmp_path):
    store = DirectoryFileStore(tmp_path)
    photo, other = jpeg((10, 20, 30)), jpeg((200, 20, 30))
    store.put_upload("tunes/1/0.jpg", photo)
    store.put_upload("tunes/2/0.jpg", photo)
    store.put_upload("tunes/2/1.jpg", other)

    assert store.get("tunes/1/0.jpg") == store.get("tunes/2/0.jpg") == photo
    assert store.get("tunes/2/1.jpg") == other
    assert len(blobs(tmp_path)) == 2
    first, second = (tmp_path / "tunes/1/0.jpg").stat(), (tmp_path / "tunes/2/0.jpg").stat()
    assert first.st_ino == second.st_ino  # one copy on disk


def test_a_blob_goes_with_its_last_key(tmp_path):
    store = DirectoryFileStore(tmp_path)
    photo = jpeg()
    store.put_upload("tunes/1/0.jpg", photo)
    store.put_upload("tunes/2/0.jpg", photo)

    store.delete_prefix("tunes/1")
    assert store.get("tunes/1/0.jpg") is None
    assert store.get("tunes/2/0.jpg") == photo
    assert len(blobs(tmp_path)) == 1

    store.delete_prefix("tunes/2")
    assert blobs(tmp_path) == []
    store.put_upload("tunes/3/0.jpg", photo)  # stored again from nothing
    assert store.get("tunes/3/0.jpg") == photo


def test_generated_files_are_plain_files(tmp_path):
    store = DirectoryFileStore(tmp_path)
    store.put("prompts/1/0.jpg", b"rendered")
    assert blobs(tmp_path) == []
    store.delete_prefix("prompts/1")
    assert not (tmp_path / "prompts/1").exists()


def test_without_hard_links_an_upload_is_a_copy(tmp_path, monkeypatch):
    def refuse(*_args: object) -> None:
        raise PermissionError("hard links are not supported here")

    monkeypatch.setattr("mockserver.files.os.link", refuse)
    store = DirectoryFileStore(tmp_path)
    store.put_upload("tunes/1/0.jpg", b"photo")
    store.put_upload("tunes/2/0.jpg", b"photo")
    assert store.get("tunes/1/0.jpg") == store.get("tunes/2/0.jpg") == b"photo"
    assert blobs(tmp_path) == []


def test_different_photos_of_the_same_checksum_are_kept_apart(tmp_path, monkeypatch):
    monkeypatch.setattr("mockserver.files.zlib.crc32", lambda _data: 7)
    store = DirectoryFileStore(tmp_path)
    store.put_upload("tunes/1/0.jpg", b"first")
    store.put_upload("tunes/2/0.jpg", b"other")  # same size, same (patched) checksum
    assert store.get("tunes/1/0.jpg") == b"first"
    assert store.get("tunes/2/0.jpg") == b"other"
    store.delete_prefix("tunes/2")
    assert store.get("tunes/1/0.jpg") == b"first"
    store.delete_prefix("tunes/1")
    assert blobs(tmp_path) == []


@pytest.mark.parametrize("key", [".blobs/ab/cd", "tunes/.tmp-1", "tunes/../x", "/etc/passwd", ""])
def test_keys_cannot_name_the_stores_own_files(tmp_path, key):
    store = DirectoryFileStore(tmp_path)
    assert store.get(key) is None
    with pytest.raises(ValueError, match="bad file key"):
        store.put(key, b"x")


def test_tunes_of_the_same_photos_share_them_until_deleted(make_api, tmp_path):
    api = make_api(ephemeral=False, data_dir=tmp_path)
    photo = jpeg((90, 60, 30), (96, 96))
    first = api.faceid_tune("First", photo)
    second = api.faceid_tune("Second", photo)
    files = tmp_path / "files"
    assert len(blobs(files)) == 1

    assert api.delete(f"/tunes/{first['id']}").status_code == 200
    downloaded = api.client.get(second["orig_images"][0])
    assert downloaded.status_code == 200
    assert downloaded.content == photo
    assert api.delete(f"/tunes/{second['id']}").status_code == 200
    assert blobs(files) == []


def test_stale_staged_uploads_are_cleared_at_start(tmp_path):
    store = DirectoryFileStore(tmp_path)
    staged = store.stage_uploads([("0.jpg", b"photo")])
    fresh = store.stage_uploads([("0.jpg", b"other")])
    old = time.time() - 2 * 3600
    os.utime(tmp_path / STAGING / staged, (old, old))

    DirectoryFileStore(tmp_path)  # a restart
    assert not (tmp_path / STAGING / staged).exists()
    assert (tmp_path / STAGING / fresh).exists()  # perhaps another process's, in flight
    assert len(blobs(tmp_path)) == 1


def test_adopted_uploads_replace_what_an_unfinished_create_left(tmp_path):
    store = DirectoryFileStore(tmp_path)
    store.put_upload("tunes/5/0.jpg", b"left by a transaction that never committed")
    store.adopt(store.stage_uploads([("0.jpg", b"new")]), "tunes/5")
    assert store.get("tunes/5/0.jpg") == b"new"
    assert len(blobs(tmp_path)) == 1
    assert list((tmp_path / STAGING).iterdir()) == []


def test_a_refused_tune_leaves_no_files(make_api, tmp_path):
    api = make_api(ephemeral=False, data_dir=tmp_path)
    files = [("tune[images][]", ("face.jpg", jpeg(), "image/jpeg"))]
    data = {"tune[title]": "t", "tune[name]": "man", "tune[base_tune_id]": "999"}
    assert api.post("/tunes", data=data, files=files).status_code == 422
    data = {"tune[title]": "t", "tune[name]": "man", "tune[prompts_attributes][][text]": "x"}
    files.append(("tune[prompts_attributes][][input_image]", ("in.jpg", b"not a photo", "")))
    assert api.post("/tunes", data=data, files=files).status_code == 422
    stored = tmp_path / "files"
    assert blobs(stored) == []
    assert list((stored / STAGING).iterdir()) == []
    assert not (stored / "tunes").exists() or list((stored / "tunes").iterdir()) == []


def test_a_tune_and_its_prompt_with_an_input_image(make_api, tmp_path):
    api = make_api(ephemeral=False, data_dir=tmp_path)
    face, scene = jpeg((10, 90, 10)), jpeg((90, 10, 10))
    files = [
        ("tune[images][]", ("face.jpg", face, "image/jpeg")),
        ("tune[prompts_attributes][][input_image]", ("scene.jpg", scene, "image/jpeg")),
    ]
    data = {
        "tune[title]": "t",
        "tune[name]": "man",
        "tune[prompts_attributes][][text]": "on a boat",
    }
    created = api.post("/tunes", data=data, files=files)
    assert created.status_code == 201, created.text
    tune = created.json()
    assert api.client.get(tune["orig_images"][0]).content == face
    prompt = api.get(f"/tunes/{tune['id']}/prompts").json()[0]
    assert api.client.get(prompt["input_image"]).content == scene
