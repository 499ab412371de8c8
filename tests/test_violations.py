"""The mock logs how each client request broke the contract, per tenant."""

from __future__ import annotations

from conftest import Api


def violations(api: Api) -> list[dict]:
    response = api.client.get("/_mock/violations", headers={"Authorization": f"Bearer {api.key}"})
    assert response.status_code == 200
    return list(response.json()["violations"])


def test_a_valid_client_leaves_no_violations(api: Api):
    api.faceid_tune()
    api.post("/tunes/690204/prompts", json={"prompt": {"text": "a cat", "num_images": 2}})
    api.get("/tunes?limit=5")
    assert violations(api) == []


def test_wrong_field_name_is_served_but_logged(api: Api):
    response = api.post(
        "/tunes/690204/prompts", json={"prompt": {"text": "x", "number_of_images": 2}}
    )
    assert response.status_code == 201
    [violation] = violations(api)
    assert violation["operation"] == "createPrompt"
    assert violation["field"] == "number_of_images"
    assert violation["message"] == "is not a known field"
    assert violation["request"]["method"] == "POST"
    assert violation["request"]["path"] == "/tunes/690204/prompts"
    assert violation["request"]["body"] == {"prompt": {"text": "x", "number_of_images": 2}}


def test_number_as_text_in_json_and_missing_text(api: Api):
    assert (
        api.post(
            "/tunes/690204/prompts", json={"prompt": {"text": "x", "num_images": "2"}}
        ).status_code
        == 422
    )
    assert api.post("/tunes/690204/prompts", json={"prompt": {"num_images": 2}}).status_code == 422
    found = {(v["field"], v["message"]) for v in violations(api)}
    assert found == {("num_images", "must be an integer"), ("text", "can't be blank")}


def test_bad_paging_and_bad_bodies_are_logged(api: Api):
    api.get("/prompts?limit=500")
    api.post("/tunes", content=b"{oops", headers={"content-type": "application/json"})
    api.post("/tunes", content=b"x", headers={"content-type": "text/csv"})
    fields = [(v["operation"], v["field"]) for v in violations(api)]
    assert fields == [("listPrompts", "limit"), ("createTune", "body"), ("createTune", "body")]


def test_violations_are_per_tenant_and_can_be_cleared(api: Api):
    api.post("/tunes/690204/prompts", json={"prompt": {"text": "x", "oops": 1}})
    other = api.as_key("sd_other")
    assert violations(other) == []
    all_tenants = api.client.get("/_mock/violations").json()["violations"]
    assert len(all_tenants) == 1
    api.client.delete("/_mock/violations", headers={"Authorization": f"Bearer {api.key}"})
    assert violations(api) == []


def test_strict_mode_answers_422_for_unknown_fields(make_api):
    api = make_api(strict=True)
    response = api.post("/tunes/690204/prompts", json={"prompt": {"text": "x", "colour": "blue"}})
    assert response.status_code == 422
    assert response.json() == {"colour": ["is not a known field"]}
    assert len(violations(api)) == 1


def test_form_bodies_are_checked_after_decoding(api: Api):
    data = {"prompt[text]": "x", "prompt[num_images]": "2", "prompt[nmu_images]": "3"}
    assert api.post("/tunes/690204/prompts", data=data).status_code == 201
    [violation] = violations(api)
    assert violation["field"] == "nmu_images"
    assert violation["request"]["content_type"] == "application/x-www-form-urlencoded"
