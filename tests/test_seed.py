"""--seed-file: a sandbox that starts populated, through the same rules as the API."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import KEY, jpeg

from mockserver.seed import SeedError

SEED = f"""
tenants:
  {KEY}:
    tunes:
      - title: Jane
        name: woman
        model_type: faceid
        images: [faces/jane.jpg]
        prompts:
          - checkpoint: 690204
            text: "<faceid:$tune:1> Jane trekking in the alps"
            num_images: 2
      - title: Dog
        name: dog
        branch: fast
        image_urls: [https://example.com/dog.jpg]
"""


def write_seed(tmp_path: Path, text: str = SEED) -> Path:
    (tmp_path / "faces").mkdir()
    (tmp_path / "faces" / "jane.jpg").write_bytes(jpeg((250, 0, 0)))
    path = tmp_path / "seed.yaml"
    path.write_text(text)
    return path


def test_seeded_sandbox_starts_populated(tmp_path: Path, make_api):
    api = make_api(seed_file=write_seed(tmp_path))
    tunes = {t["title"]: t for t in api.get("/tunes").json()}
    assert tunes["Jane"]["model_type"] == "faceid"
    assert tunes["Dog"]["trained_at"] is not None
    face = api.client.get(tunes["Jane"]["orig_images"][0].removeprefix("http://127.0.0.1:8000"))
    assert face.content == jpeg((250, 0, 0))
    [prompt] = api.get("/prompts").json()
    assert prompt["text"] == f"<faceid:{tunes['Jane']['id']}:1> Jane trekking in the alps"
    assert len(prompt["images"]) == 2
    assert api.as_key("sd_someone_else").get("/prompts").json() == []


def test_a_seeded_tenant_is_not_seeded_twice(tmp_path: Path, make_api):
    seed = write_seed(tmp_path)
    make_api(seed_file=seed, ephemeral=False, data_dir=tmp_path / "data")
    again = make_api(seed_file=seed, ephemeral=False, data_dir=tmp_path / "data")
    assert [t["title"] for t in again.get("/tunes").json()].count("Jane") == 1


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("tunes: []", "expected 'tenants"),
        (
            f"tenants:\n  {KEY}:\n    tunes:\n      - {{title: x, name: man, images: [missing.jpg]}}\n",
            "missing.jpg",
        ),
        (
            f"tenants:\n  {KEY}:\n    tunes:\n      - {{title: x, image_urls: [https://e.com/a.jpg]}}\n",
            "name can't be blank",
        ),
        (
            f"tenants:\n  {KEY}:\n    tunes:\n      - {{title: x, name: man, model_type: faceid, image_urls: [https://e.com/a.jpg], prompts: [{{text: hi}}]}}\n",
            "model_type=faceid is not supported",
        ),
    ],
)
def test_bad_seed_files_name_the_entry(tmp_path: Path, make_api, text, words):
    with pytest.raises(SeedError, match=words):
        make_api(seed_file=write_seed(tmp_path, text))
