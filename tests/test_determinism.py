"""Two fresh servers with a frozen clock, given the same requests, answer the same bytes."""

from __future__ import annotations

from conftest import BASE, jpeg


def replay(make_api) -> list[bytes]:
    api = make_api(clock="frozen:2024-05-01T12:00:00Z")
    answers: list[bytes] = []

    def keep(response) -> dict:
        answers.append(response.content)
        return response.json() if response.content else {}

    files = [("tune[images][]", ("face.jpg", jpeg((1, 2, 3)), "image/jpeg"))]
    tune = keep(
        api.post(
            "/tunes",
            data={"tune[title]": "a", "tune[name]": "man", "tune[model_type]": "faceid"},
            files=files,
        )
    )
    prompt = keep(
        api.post(
            "/tunes/690204/prompts",
            json={"prompt": {"text": f"<faceid:{tune['id']}:1> hi", "num_images": 2}},
        )
    )
    unseeded = keep(api.post("/tunes/690204/prompts", json={"prompt": {"text": "no seed"}}))
    for prompt_id in (prompt["id"], unseeded["id"]):
        done = api.complete(prompt_id)
        answers.append(repr(done).encode())
        answers.extend(api.client.get(url.removeprefix(BASE)).content for url in done["images"])
    keep(api.get("/tunes"))
    keep(api.get("/prompts"))
    keep(api.post(f"/prompts/{prompt['id']}/duplicate", json={"prompt": {"seed": 9}}))
    return answers


def test_frozen_clock_replays_are_byte_identical(make_api):
    first, second = replay(make_api), replay(make_api)
    assert len(first) == len(second) > 10
    for index, (a, b) in enumerate(zip(first, second, strict=True)):
        assert a == b, f"answer {index} differs"


def test_frozen_clock_timestamps(make_api):
    api = make_api(clock="frozen:2024-05-01T12:00:00Z")
    tune = api.faceid_tune()
    assert tune["created_at"] == "2024-05-01T12:00:00.000Z"
    assert tune["expires_at"] == "2024-05-31T12:00:00.000Z"
