"""The seed's FaceID flow, sent exactly as its curl examples send it."""

from __future__ import annotations

import io

from conftest import BASE, Api, jpeg
from PIL import Image, ImageChops

FACEID_422 = {"base": ["model_type=faceid is not supported. Use a checkpoint instead"]}
CALLBACK = "https://optional-callback-url.com/webhooks/astria?user_id=1&tune_id=1"


def assert_faceid_tune(tune: dict, title: str) -> None:
    assert tune["title"] == title
    assert tune["model_type"] == "faceid"
    assert tune["trained_at"] is not None
    assert tune["trained_at"] == tune["created_at"]
    assert tune["ckpt_url"] is None
    assert tune["ckpt_urls"] == []
    assert tune["branch"] == "sd15"
    assert tune["steps"] is None
    assert tune["url"] == f"{BASE}/tunes/{tune['id']}.json"


def test_multipart_with_image_files(api: Api):
    images = [jpeg((10 * i, 100, 200)) for i in range(4)]
    data = {
        "tune[title]": "John Doe - UUID - 1234-6789-1234-56789",
        "tune[name]": "man",
        "tune[model_type]": "faceid",
        "tune[callback]": CALLBACK,
        "tune[base_tune_id]": "690204",
    }
    files = [("tune[images][]", (f"{i}.jpg", img, "image/jpeg")) for i, img in enumerate(images)]
    response = api.post("/tunes", data=data, files=files)
    assert response.status_code == 201, response.text
    tune = response.json()
    assert_faceid_tune(tune, data["tune[title]"])
    assert tune["callback"] == CALLBACK
    assert tune["base_tune_id"] == 690204
    assert len(tune["orig_images"]) == 4
    for url, original in zip(tune["orig_images"], images, strict=True):
        assert url.startswith(BASE)
        download = api.client.get(url.removeprefix(BASE))
        assert download.status_code == 200
        assert download.content == original


def test_multipart_with_image_urls(api: Api):
    urls = ["https://i.imgur.com/HLHBnl9.jpeg"] * 4
    fields = [
        ("tune[title]", "John Doe - urls"),
        ("tune[name]", "man"),
        ("tune[model_type]", "faceid"),
        ("tune[base_tune_id]", "690204"),
        *[("tune[image_urls][]", url) for url in urls],
    ]
    # curl -F without files: multipart with text parts only.
    files = [(name, (None, value)) for name, value in fields]
    response = api.post("/tunes", files=files)
    assert response.status_code == 201, response.text
    tune = response.json()
    assert_faceid_tune(tune, "John Doe - urls")
    assert tune["orig_images"] == urls


def test_json_body(api: Api):
    body = {
        "tune": {
            "title": "John Doe - json",
            "name": "man",
            "model_type": "faceid",
            "callback": CALLBACK,
            "image_urls": ["https://i.imgur.com/HLHBnl9.jpeg"] * 4,
        }
    }
    response = api.post("/tunes", json=body)
    assert response.status_code == 201, response.text
    assert_faceid_tune(response.json(), "John Doe - json")


def test_faceid_ignores_steps_and_training_face_correct(api: Api):
    body = {
        "tune": {
            "title": "t",
            "name": "woman",
            "model_type": "faceid",
            "steps": 500,
            "training_face_correct": True,
            "image_urls": ["https://example.com/a.jpg"],
        }
    }
    tune = api.post("/tunes", json=body).json()
    assert tune["steps"] is None
    assert tune["training_face_correct"] is False
    assert tune["expires_at"] is not None


def test_prompt_on_gallery_checkpoint_carries_the_face(api: Api):
    red_face = jpeg((230, 20, 20), (128, 128))
    tune = api.faceid_tune(image=red_face)
    data = {
        "prompt[text]": f"<faceid:{tune['id']}:1> woman trekking in the alps",
        "prompt[negative_prompt]": "",
        "prompt[super_resolution]": "true",
        "prompt[face_correct]": "true",
        "prompt[face_swap]": "true",
        "prompt[callback]": "https://optional-callback-url.com/to-your-service-when-ready?prompt_id=1",
    }
    files = [(name, (None, value)) for name, value in data.items()]
    response = api.post("/tunes/690204/prompts", files=files)
    assert response.status_code == 201, response.text
    prompt = response.json()
    assert prompt["tune_id"] == 690204
    assert prompt["trained_at"] is None
    assert prompt["images"] == []
    assert prompt["super_resolution"] is True
    assert prompt["negative_prompt"] is None  # an empty form value is null

    done = api.complete(prompt["id"])
    assert done["trained_at"] is not None
    assert len(done["images"]) == 1
    image = api.client.get(done["images"][0].removeprefix(BASE))
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/jpeg"
    picture = Image.open(io.BytesIO(image.content))
    assert picture.size == (512, 512)
    again = api.get(f"/tunes/690204/prompts/{prompt['id']}").json()
    assert again == done


def test_prompting_the_faceid_tune_itself_is_the_documented_422(api: Api):
    tune = api.faceid_tune()
    response = api.post(
        f"/tunes/{tune['id']}/prompts", data={"prompt[text]": f"<faceid:{tune['id']}:1> a man"}
    )
    assert response.status_code == 422
    assert response.json() == FACEID_422


def test_faceid_tag_errors_name_the_tag(api: Api):
    faceid = api.faceid_tune()
    other = api.as_key("sd_someone_else").faceid_tune()
    cases = {
        "<faceid:999999:1>": "which does not exist",
        f"<faceid:{other['id']}:1>": "which does not exist",
        "<faceid:690204:1>": "which is not a FaceID tune",
        f"<faceid:{faceid['id']}:abc>": "bad strength",
        f"<faceid:{faceid['id']}:7>": "bad strength",
        f"<faceid:{faceid['id']}>": "malformed",
    }
    for tag, expected in cases.items():
        response = api.post("/tunes/690204/prompts", json={"prompt": {"text": f"{tag} a man"}})
        assert response.status_code == 422, tag
        [message] = response.json()["text"]
        assert tag in message
        assert expected in message


def count_red_pixels(picture: Image.Image) -> int:
    r, g, b = picture.split()
    strong_red = r.point(lambda v: 255 if v > 200 else 0)
    weak_green = g.point(lambda v: 255 if v < 60 else 0)
    weak_blue = b.point(lambda v: 255 if v < 60 else 0)
    mask = ImageChops.multiply(ImageChops.multiply(strong_red, weak_green), weak_blue)
    return mask.histogram()[255]


def test_face_appears_in_generated_image(api: Api):
    tune = api.faceid_tune(image=jpeg((240, 10, 10), (256, 256)))
    with_face = api.post(
        "/tunes/690204/prompts",
        json={"prompt": {"text": f"<faceid:{tune['id']}:1> portrait", "seed": 5}},
    ).json()
    without = api.post(
        "/tunes/690204/prompts", json={"prompt": {"text": "portrait", "seed": 5}}
    ).json()
    red = []
    for prompt in (with_face, without):
        url = api.complete(prompt["id"])["images"][0]
        picture = Image.open(io.BytesIO(api.client.get(url.removeprefix(BASE)).content)).convert(
            "RGB"
        )
        red.append(count_red_pixels(picture))
    assert red[0] > 5000 > red[1]
