"""Bodies in every shape, and every way a request can be wrong: clear JSON errors, no 500."""

from __future__ import annotations

import io
from urllib.parse import urlencode

import pytest
from conftest import Api, jpeg
from PIL import Image


def prompt(api: Api, **fields) -> object:
    return api.post("/tunes/690204/prompts", json={"prompt": {"text": "a cat", **fields}})


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"cfg_scale": 16}, "cfg_scale", "less than or equal to 15"),
        ({"num_images": 9}, "num_images", "less than or equal to 8"),
        ({"num_images": 0}, "num_images", "greater than or equal to 1"),
        ({"steps": 51}, "steps", "less than or equal to 50"),
        ({"w": 500}, "w", "multiple of 8"),
        ({"scheduler": "ddim"}, "scheduler", "not included in the list"),
        ({"num_images": "3"}, "num_images", "must be an integer"),
        ({"seed": 2**32}, "seed", "less than or equal to"),
        ({"callback": "not a url"}, "callback", "not a valid"),
    ],
)
def test_json_violations_are_422_naming_the_field(api: Api, fields, field, words):
    response = prompt(api, **fields)
    assert response.status_code == 422
    body = response.json()
    assert field in body, body
    assert any(words in message for message in body[field]), body


def test_missing_text_is_422(api: Api):
    response = api.post("/tunes/690204/prompts", json={"prompt": {"num_images": 2}})
    assert response.status_code == 422
    assert response.json() == {"text": ["can't be blank"]}


def test_missing_wrapper_is_422(api: Api):
    response = api.post("/tunes/690204/prompts", json={})
    assert response.status_code == 422
    assert "prompt" in response.json()


def test_form_values_are_coerced_by_the_contract(api: Api):
    data = {
        "prompt[text]": "a cat",
        "prompt[num_images]": "3",
        "prompt[cfg_scale]": "3.5",
        "prompt[seed]": "42",
        "prompt[face_correct]": "true",
        "prompt[w]": "640",
        "prompt[h]": "384",
    }
    body = api.post("/tunes/690204/prompts", data=data).json()
    assert (body["num_images"], body["cfg_scale"], body["seed"]) == (3, 3.5, 42)
    assert body["face_correct"] is True
    assert (body["w"], body["h"]) == (640, 384)


def test_form_value_of_the_wrong_type_is_422(api: Api):
    response = api.post(
        "/tunes/690204/prompts", data={"prompt[text]": "x", "prompt[num_images]": "lots"}
    )
    assert response.status_code == 422
    assert "num_images" in response.json()


def test_same_prompt_in_three_shapes_gives_the_same_object(make_api):
    bodies = []
    for shape in ("json", "urlencoded", "multipart"):
        api = make_api(clock="frozen:2024-01-01T00:00:00Z")
        fields = {"text": "a dog", "num_images": 2, "cfg_scale": 3, "super_resolution": True}
        if shape == "json":
            response = api.post("/tunes/690204/prompts", json={"prompt": fields})
        else:
            form = {
                f"prompt[{k}]": str(v).lower() if isinstance(v, bool) else str(v)
                for k, v in fields.items()
            }
            if shape == "urlencoded":
                response = api.post("/tunes/690204/prompts", data=form)
            else:
                response = api.post(
                    "/tunes/690204/prompts", files=[(k, (None, v)) for k, v in form.items()]
                )
        assert response.status_code == 201, response.text
        bodies.append(response.content)
    assert bodies[0] == bodies[1] == bodies[2]


def test_indexed_and_nested_form_arrays(api: Api):
    data = [
        ("tune[title]", "lora"),
        ("tune[name]", "woman"),
        ("tune[model_type]", "lora"),
        ("tune[image_urls][0]", "https://example.com/0.jpg"),
        ("tune[image_urls][1]", "https://example.com/1.jpg"),
        ("tune[characteristics]", '{"eye_color": "green"}'),
        ("tune[prompts_attributes][][text]", "sks woman with {{eye_color}} eyes"),
        ("tune[prompts_attributes][][num_images]", "2"),
        ("tune[prompts_attributes][][text]", "sks woman on a boat"),
    ]
    response = api.post(
        "/tunes",
        content=urlencode(data),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 201, response.text
    tune = response.json()
    assert tune["orig_images"] == ["https://example.com/0.jpg", "https://example.com/1.jpg"]
    assert tune["characteristics"] == {"eye_color": "green"}
    prompts = api.get(f"/tunes/{tune['id']}/prompts").json()
    assert [(p["text"], p["num_images"]) for p in prompts] == [
        ("sks woman on a boat", 1),
        ("sks woman with green eyes", 2),
    ]


def test_unknown_fields_are_ignored_like_the_real_api(api: Api):
    response = prompt(api, colour="blue")
    assert response.status_code == 201


@pytest.mark.parametrize(
    ("content_type", "payload", "status"),
    [
        ("application/json", b'{"prompt": ', 400),
        ("application/json", b"[1, 2]", 400),
        ("application/json", b'{"prompt": {"text": "x", "cfg_scale": NaN}}', 400),
        ("application/json", b"[" * 100000 + b"]" * 100000, 400),
        ("multipart/form-data; boundary=xyz", b"--xyz\r\nnot a part", 400),
        ("multipart/form-data", b"no boundary at all", 400),
        ("text/plain", b"prompt[text]=x", 415),
        ("application/xml", b"<prompt/>", 415),
        ("application/x-www-form-urlencoded", b"prompt[text=x", 400),
        ("application/x-www-form-urlencoded", b"prompt=x&prompt[text]=y", 400),
        ("application/x-www-form-urlencoded", b"prompt[text]=%ff%fe", 400),
    ],
)
def test_malformed_bodies_get_a_json_error(api: Api, content_type, payload, status):
    response = api.post(
        "/tunes/690204/prompts", content=payload, headers={"content-type": content_type}
    )
    assert response.status_code == status, response.text
    assert isinstance(response.json()["error"], str)


@pytest.mark.parametrize(
    ("payload", "text"),
    [
        (b'{"prompt": {"text": "caf\\u00e9 \\ud83d\\ude00"}}', "café 😀"),  # escapes
        ('{"prompt": {"text": "in UTF-16"}}'.encode("utf-16"), "in UTF-16"),
        ('\ufeff{"prompt": {"text": "after a BOM"}}'.encode(), "after a BOM"),
    ],
)
def test_json_bodies_decode_as_the_standard_library_does(api: Api, payload, text):
    response = api.post(
        "/tunes/690204/prompts", content=payload, headers={"content-type": "application/json"}
    )
    assert response.status_code == 201, response.text
    assert response.json()["text"] == text


def test_body_over_the_limit_is_413(make_api):
    api = make_api(max_body_bytes=10_000)
    files = [("tune[images][]", ("big.jpg", b"x" * 20_000, "image/jpeg"))]
    response = api.post("/tunes", data={"tune[title]": "t", "tune[name]": "man"}, files=files)
    assert response.status_code == 413
    assert "limit" in response.json()["error"]


def test_undecodable_image_is_422(api: Api):
    files = [("tune[images][]", ("face.jpg", b"definitely not a jpeg", "image/jpeg"))]
    data = {"tune[title]": "t", "tune[name]": "man", "tune[model_type]": "faceid"}
    response = api.post("/tunes", data=data, files=files)
    assert response.status_code == 422
    assert "images[0]" in response.json()


def test_image_bomb_is_422(api: Api):
    out = io.BytesIO()
    Image.new("1", (20000, 20000)).save(out, "PNG")
    files = [("tune[images][]", ("bomb.png", out.getvalue(), "image/png"))]
    data = {"tune[title]": "t", "tune[name]": "man", "tune[model_type]": "faceid"}
    response = api.post("/tunes", data=data, files=files)
    assert response.status_code == 422
    assert "images[0]" in response.json()


def test_tune_without_images_is_422(api: Api):
    response = api.post("/tunes", json={"tune": {"title": "t", "name": "man"}})
    assert response.status_code == 422
    assert "images" in response.json()


def test_json_images_as_data_urls(api: Api):
    import base64

    data_url = "data:image/jpeg;base64," + base64.b64encode(jpeg()).decode()
    body = {"tune": {"title": "t", "name": "man", "model_type": "faceid", "images": [data_url]}}
    response = api.post("/tunes", json=body)
    assert response.status_code == 201, response.text
    assert len(response.json()["orig_images"]) == 1
    bad = {"tune": {"title": "t2", "name": "man", "images": ["https://example.com/x.jpg"]}}
    assert api.post("/tunes", json=bad).status_code == 422


def test_paging_errors_are_400(api: Api):
    for query in ("offset=201", "limit=0", "limit=121", "limit=abc", "before_id=x"):
        response = api.get(f"/tunes?{query}")
        assert response.status_code == 400, query
        assert "error" in response.json()
    assert "before_id" in api.get("/tunes?offset=201").json()["error"]
    assert api.get("/prompts?offset=10000").status_code == 200
    assert api.get("/prompts?offset=10001").status_code == 400


def test_unknown_paths_and_methods_are_json(api: Api):
    assert api.get("/nothing").json() == {"error": "Not found"}
    response = api.request("PUT", "/tunes")
    assert response.status_code == 405
    assert response.json() == {"error": "Method not allowed"}
    assert set(response.headers["allow"].split(", ")) == {"GET", "POST", "HEAD"}
    assert api.get("/tunes/99999999999999999999999").status_code == 404
    assert api.get("/tunes/abc").status_code == 404
