"""Tunes and prompts end to end: auth, tenants, lifecycle, lists, delete, duplicate, likes."""

from __future__ import annotations

import time

import pytest
from conftest import BASE, OTHER_KEY, Api, jpeg


def create_prompt(api: Api, text: str = "a cat", tune_id: int = 690204, **fields) -> dict:
    response = api.post(f"/tunes/{tune_id}/prompts", json={"prompt": {"text": text, **fields}})
    assert response.status_code == 201, response.text
    return dict(response.json())


def wait_until(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.mark.parametrize(
    "header", [None, "", "Bearer", "Bearer ", "Basic abc", "Bearer has space", "Token sd_x"]
)
def test_missing_or_malformed_key_is_401(api: Api, header):
    headers = {} if header is None else {"Authorization": header}
    response = api.client.get("/tunes", headers=headers)
    assert response.status_code == 401
    assert "Authorization" in response.json()["error"]


def test_restricted_keys(make_api):
    api = make_api(api_keys=("sd_allowed",))
    assert api.as_key("sd_allowed").get("/tunes").status_code == 200
    response = api.as_key("sd_other").get("/tunes")
    assert response.status_code == 401
    assert response.json() == {"error": "invalid API key"}


def test_tenants_never_see_each_other(api: Api):
    tune = api.faceid_tune()
    prompt = create_prompt(api, f"<faceid:{tune['id']}:1> a man")
    other = api.as_key(OTHER_KEY)
    assert other.get(f"/tunes/{tune['id']}").status_code == 404
    assert other.get(f"/prompts/{prompt['id']}").status_code == 404
    assert other.delete(f"/tunes/{tune['id']}").status_code == 404
    assert [t["id"] for t in other.get("/tunes").json()] == [1504944, 690204]
    assert other.get("/prompts").json() == []
    assert api.get(f"/tunes/{tune['id']}").status_code == 200


def test_gallery_is_listed_fetched_prompted_never_deleted(api: Api):
    listed = {t["id"]: t for t in api.get("/tunes").json()}
    assert listed[690204]["title"] == "Realistic Vision v5.1"
    assert listed[690204]["branch"] == "sd15"
    assert listed[1504944]["branch"] == "flux1"
    assert api.get("/tunes/1504944.json").json() == listed[1504944]
    response = api.delete("/tunes/690204")
    assert response.status_code == 422
    assert "base" in response.json()
    assert api.get("/tunes/690204").status_code == 200
    flux = create_prompt(api, tune_id=1504944)
    assert api.complete(flux["id"])["images"]


def test_prompt_completes_after_prompt_seconds(make_api):
    api = make_api(prompt_seconds=0.2)
    prompt = create_prompt(api, num_images=3)
    assert prompt["images"] == []
    done = wait_until(
        lambda: (
            api.get(f"/prompts/{prompt['id']}.json").json()["trained_at"]
            and api.get(f"/prompts/{prompt['id']}").json()
        )
    )
    assert len(done["images"]) == 3
    assert len(set(done["images"])) == 3
    contents = {api.client.get(url.removeprefix(BASE)).content for url in done["images"]}
    assert len(contents) == 3  # one distinct image per index


def test_prompt_completes_on_the_nth_poll(make_api):
    api = make_api(prompt_polls=3)
    prompt = create_prompt(api)
    assert api.get(f"/prompts/{prompt['id']}").json()["images"] == []
    assert api.get(f"/prompts/{prompt['id']}").json()["images"] == []
    third = api.get(f"/prompts/{prompt['id']}").json()
    assert third["trained_at"] is not None
    assert len(third["images"]) == 1


def test_lora_tune_trains_then_its_prompts_run(make_api):
    api = make_api(train_seconds=0.3, prompt_seconds=0.1)
    body = {
        "tune": {
            "title": "lora",
            "name": "woman",
            "model_type": "lora",
            "base_tune_id": 690204,
            "image_urls": ["https://example.com/a.jpg"],
            "prompts_attributes": [{"text": "sks woman"}],
        }
    }
    tune = api.post("/tunes", json=body).json()
    assert tune["trained_at"] is None
    assert tune["ckpt_url"] is None
    assert tune["token"] == "sks"
    trained = wait_until(lambda: (t := api.get(f"/tunes/{tune['id']}").json())["trained_at"] and t)
    assert trained["ckpt_url"].endswith(f"/tunes/{tune['id']}/model.safetensors")
    assert trained["ckpt_urls"] == [trained["ckpt_url"]]
    assert api.client.get(trained["ckpt_url"].removeprefix(BASE)).status_code == 200
    [prompt] = api.get(f"/tunes/{tune['id']}/prompts").json()
    wait_until(lambda: api.get(f"/prompts/{prompt['id']}").json()["images"])
    lora_prompt = create_prompt(api, f"<lora:{tune['id']}:0.8> sks woman")
    assert lora_prompt["text"].startswith("<lora:")
    faceid_tag = api.post(
        "/tunes/690204/prompts", json={"prompt": {"text": f"<faceid:{tune['id']}:1> x"}}
    )
    assert faceid_tag.status_code == 422


def test_fast_branch_trains_at_once(api: Api):
    body = {
        "tune": {
            "title": "f",
            "name": "dog",
            "branch": "fast",
            "image_urls": ["https://e.com/a.jpg"],
        }
    }
    tune = api.post("/tunes", json=body).json()
    assert tune["trained_at"] is not None
    assert tune["ckpt_url"] is not None


def test_sdxl_forces_pti(api: Api):
    body = {
        "tune": {
            "title": "x",
            "name": "man",
            "branch": "sdxl1",
            "image_urls": ["https://e.com/a.jpg"],
        }
    }
    tune = api.post("/tunes", json=body).json()
    assert (tune["branch"], tune["model_type"], tune["token"]) == ("sdxl1", "pti", "ohwx")


def test_unknown_base_tune_is_422(api: Api):
    body = {
        "tune": {
            "title": "x",
            "name": "man",
            "base_tune_id": 12345,
            "image_urls": ["https://e.com/a.jpg"],
        }
    }
    response = api.post("/tunes", json=body)
    assert response.status_code == 422
    assert "base_tune_id" in response.json()


def test_lists_newest_first_with_keyset_and_offset(api: Api):
    ids = [api.faceid_tune(title=f"t{i}")["id"] for i in range(5)]
    listed = [t["id"] for t in api.get("/tunes?limit=3").json()]
    assert listed == [1504944, 690204, ids[4]]
    page = [t["id"] for t in api.get(f"/tunes?before_id={ids[3]}&limit=2").json()]
    assert page == ids[2:0:-1]
    assert [t["id"] for t in api.get("/tunes?offset=6").json()] == [ids[0]]
    assert api.get(f"/tunes?before_id={ids[0]}").json() == []
    prompts = [create_prompt(api, f"p{i}")["id"] for i in range(3)]
    assert [p["id"] for p in api.get("/prompts").json()] == prompts[::-1]
    assert [p["id"] for p in api.get("/tunes/690204/prompts?limit=1").json()] == [prompts[2]]
    assert api.get("/tunes/424242/prompts").status_code == 404


def test_delete_tune_takes_its_prompts_and_files(api: Api):
    body = {
        "tune": {
            "title": "x",
            "name": "man",
            "branch": "fast",
            "image_urls": ["https://e.com/a.jpg"],
        }
    }
    tune = api.post("/tunes", json=body).json()
    prompt = create_prompt(api, tune_id=tune["id"])
    done = api.complete(prompt["id"])
    response = api.delete(f"/tunes/{tune['id']}")
    assert response.status_code == 200
    assert response.json() == {"message": "Tune successfully deleted"}
    assert api.get(f"/tunes/{tune['id']}").status_code == 404
    assert api.get(f"/prompts/{prompt['id']}").status_code == 404
    assert api.client.get(done["images"][0].removeprefix(BASE)).status_code == 404


def test_delete_prompt_both_paths(api: Api):
    first, second = create_prompt(api), create_prompt(api, "b")
    response = api.delete(f"/tunes/690204/prompts/{first['id']}")
    assert response.json() == {"message": "Prompt successfully deleted"}
    assert api.delete(f"/prompts/{second['id']}").status_code == 200
    assert api.get("/prompts").json() == []
    assert api.delete(f"/prompts/{second['id']}").status_code == 404


def test_prompt_under_the_wrong_tune_is_404(api: Api):
    prompt = create_prompt(api)
    assert api.get(f"/tunes/1504944/prompts/{prompt['id']}").status_code == 404
    assert api.get(f"/tunes/690204/prompts/{prompt['id']}").status_code == 200


def test_prompt_url_is_fetchable(api: Api):
    prompt = create_prompt(api)
    assert api.get(prompt["url"].removeprefix(BASE)).json() == prompt


def test_duplicate_with_overrides_and_image_index(api: Api):
    source = create_prompt(api, "a red car", num_images=2, cfg_scale=4)
    api.complete(source["id"])
    copy = api.post(f"/prompts/{source['id']}/duplicate", json={"prompt": {"cfg_scale": 7}})
    assert copy.status_code == 201
    body = copy.json()
    assert (body["text"], body["num_images"], body["cfg_scale"]) == ("a red car", 2, 7)
    assert body["id"] != source["id"]
    reuse = api.post(f"/prompts/{source['id']}/duplicate", json={"image_index": 1}).json()
    assert reuse["input_image"].endswith(f"/prompts/{source['id']}/1.jpg")
    bad = api.post(f"/prompts/{source['id']}/duplicate", json={"image_index": 2})
    assert bad.status_code == 422
    assert "image_index" in bad.json()


def test_likes(api: Api):
    prompt = create_prompt(api)
    response = api.post(f"/prompts/{prompt['id']}/likes")
    assert response.status_code == 201
    assert response.content == b""
    assert api.get(f"/prompts/{prompt['id']}").json()["liked"] is True
    assert api.delete(f"/prompts/{prompt['id']}/likes").status_code == 200
    assert api.get(f"/prompts/{prompt['id']}").json()["liked"] is False
    assert api.post("/prompts/999/likes").status_code == 404


def test_idempotency_off_by_default(api: Api):
    assert api.faceid_tune("same")["id"] != api.faceid_tune("same")["id"]
    assert create_prompt(api, "same")["id"] != create_prompt(api, "same")["id"]


def test_idempotency_on(make_api):
    api = make_api(idempotency=True)
    first = api.faceid_tune("same")
    assert api.faceid_tune("same") == first
    assert api.faceid_tune("other")["id"] != first["id"]
    prompt = create_prompt(api, "same", seed=1)
    assert create_prompt(api, "same", seed=1) == prompt
    assert create_prompt(api, "same", seed=2)["id"] != prompt["id"]


def test_controlnet_and_super_resolution_rules(api: Api):
    response = api.post(
        "/tunes/690204/prompts", json={"prompt": {"text": "x", "controlnet": "canny"}}
    )
    assert response.status_code == 422
    assert "controlnet" in response.json()
    response = api.post(
        "/tunes/690204/prompts", json={"prompt": {"text": "x", "inpaint_faces": True}}
    )
    assert response.json() == {"inpaint_faces": ["requires super_resolution"]}
    ok = create_prompt(api, "x", controlnet="canny", input_image_url="https://e.com/a.jpg")
    assert ok["input_image"] == "https://e.com/a.jpg"


def test_sizes_from_aspect_ratio(api: Api):
    prompt = create_prompt(api, aspect_ratio="16:9")
    done = api.complete(prompt["id"])
    from io import BytesIO

    from PIL import Image

    picture = Image.open(BytesIO(api.client.get(done["images"][0].removeprefix(BASE)).content))
    assert picture.size == (680, 384)


def test_health_and_spec_are_served(api: Api):
    health = api.client.get("/_mock/health").json()
    assert health["status"] == "ok"
    assert isinstance(health["pid"], int)
    spec = api.client.get("/openapi.yaml")
    assert spec.status_code == 200
    assert b"openapi: 3.1" in spec.content


def test_on_a_real_port(live_api: Api):
    tune = live_api.faceid_tune()
    assert tune["url"].startswith(str(live_api.client.base_url).rstrip("/"))
    prompt = create_prompt(live_api, f"<faceid:{tune['id']}:1> a man")
    done = live_api.complete(prompt["id"])
    assert live_api.client.get(done["images"][0]).status_code == 200


@pytest.mark.parametrize(
    "tune",
    [
        {"title": "face", "name": "man", "model_type": "faceid"},
        {"title": "lora", "name": "woman", "model_type": "lora", "callback": "https://e.com/t"},
        {"title": "fast", "name": "dog", "branch": "fast", "auto_extend": True},
    ],
)
def test_a_created_tune_reads_back_as_it_was_answered(api: Api, tune):
    files = [("tune[images][]", ("face.jpg", jpeg(), "image/jpeg"))]
    data = {f"tune[{name}]": str(value).lower() if isinstance(value, bool) else value
            for name, value in tune.items()}  # fmt: skip
    created = api.post("/tunes", data=data, files=files)
    assert created.status_code == 201, created.text
    assert api.get(f"/tunes/{created.json()['id']}").json() == created.json()
