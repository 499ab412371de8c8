"""Sandbox controls: injected faults, rate limits, the clock, reset, the admin token."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from conftest import DEFAULTS, Api, LiveServer

ADMIN = "/_mock/faults"


def add_fault(api: Api, rule: dict, scoped: bool = False) -> httpx.Response:
    headers = {"Authorization": f"Bearer {api.key}"} if scoped else {}
    return api.client.post(ADMIN, json=rule, headers=headers)


def test_429_once_with_retry_after(api: Api):
    rule = add_fault(
        api, {"method": "GET", "path": "/tunes", "status": 429, "times": 1, "retry_after": 7}
    )
    assert rule.status_code == 201
    first = api.get("/tunes")
    assert first.status_code == 429
    assert first.headers["retry-after"] == "7"
    assert "error" in first.json()
    assert api.get("/tunes").status_code == 200
    [listed] = api.client.get(ADMIN).json()["faults"]
    assert listed["fired"] == 1


def test_path_patterns_and_body_fields(api: Api):
    add_fault(api, {"path": "/tunes/*/prompts", "status": 500, "body": {"prompt.num_images": 4}})
    hit = api.post("/tunes/690204/prompts", json={"prompt": {"text": "x", "num_images": 4}})
    assert hit.status_code == 500
    assert (
        api.post(
            "/tunes/690204/prompts", json={"prompt": {"text": "x", "num_images": 2}}
        ).status_code
        == 201
    )
    assert api.get("/tunes/690204/prompts").status_code == 200  # GET has no such body


def test_504_creates_the_object_anyway(api: Api):
    add_fault(api, {"method": "POST", "path": "/tunes", "status": 504, "times": 1})
    lost = api.post(
        "/tunes",
        json={
            "tune": {
                "title": "uuid-1",
                "name": "man",
                "model_type": "faceid",
                "image_urls": ["https://e.com/a.jpg"],
            }
        },
    )
    assert lost.status_code == 504
    titles = [t["title"] for t in api.get("/tunes").json()]
    assert "uuid-1" in titles


def test_latency_is_added(api: Api):
    add_fault(api, {"path": "/tunes/690204", "latency_ms": 300})
    started = time.monotonic()
    assert api.get("/tunes/690204").status_code == 200
    assert time.monotonic() - started >= 0.3


def test_probability_is_reproducible_with_a_seed(make_api):
    patterns = []
    for _ in range(2):
        api = make_api(fault_seed=42)
        add_fault(api, {"path": "/tunes/690204", "status": 500, "probability": 0.5})
        patterns.append([api.get("/tunes/690204").status_code for _ in range(30)])
    assert patterns[0] == patterns[1]
    assert {200, 500} == set(patterns[0])


def test_tenant_rules_touch_only_that_tenant(api: Api):
    add_fault(api, {"path": "/tunes", "status": 500}, scoped=True)
    assert api.get("/tunes").status_code == 500
    assert api.as_key("sd_other").get("/tunes").status_code == 200


@pytest.mark.parametrize(
    ("rule", "words"),
    [
        ({"status": 500}, "path is required"),
        ({"path": "/tunes", "status": 418}, "status must be one of"),
        ({"path": "/tunes"}, "needs an action"),
        ({"path": "/tunes", "latency_ms": [5, 1]}, "latency_ms"),
        ({"path": "/tunes", "status": 500, "probability": 2}, "probability"),
        ({"path": "/tunes", "status": 500, "colour": "red"}, "unknown fault rule fields: colour"),
    ],
)
def test_bad_rules_are_400(api: Api, rule, words):
    response = add_fault(api, rule)
    assert response.status_code == 400
    assert words in response.json()["error"]


def test_rules_can_be_removed(api: Api):
    rule = add_fault(api, {"path": "/tunes", "status": 500}).json()
    assert api.client.delete(f"{ADMIN}/{rule['id']}").status_code == 200
    assert api.get("/tunes").status_code == 200
    assert api.client.delete(f"{ADMIN}/{rule['id']}").status_code == 404


def test_dropped_and_truncated_answers_on_a_real_port(live_api: Api):
    add_fault(live_api, {"path": "/tunes/690204", "truncate": True, "times": 1})
    add_fault(live_api, {"path": "/tunes/1504944", "drop": True, "times": 1})
    for path in ("/tunes/690204", "/tunes/1504944"):
        with pytest.raises(httpx.RemoteProtocolError):
            live_api.client.get(path, headers={"Authorization": "Bearer sd_x"})
    assert live_api.get("/tunes/690204").status_code == 200


def test_scenario_file(tmp_path: Path, make_api):
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(
        "faults:\n"
        "  - {method: GET, path: /prompts, status: 429, times: 2}\n"
        "  - {path: /tunes, status: 500, api_key: sd_unlucky}\n"
    )
    api = make_api(scenario=scenario)
    assert [api.get("/prompts").status_code for _ in range(3)] == [429, 429, 200]
    assert api.get("/tunes").status_code == 200
    assert api.as_key("sd_unlucky").get("/tunes").status_code == 500


def test_rate_limit_per_key(make_api):
    api = make_api(rate_limit="3/s")
    codes = [api.get("/tunes").status_code for _ in range(4)]
    assert codes[:3] == [200, 200, 200]
    limited = api.get("/tunes")
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1
    assert api.as_key("sd_other").get("/tunes").status_code == 200


def test_advancing_the_clock_expires_tunes(make_api):
    api = make_api(clock="frozen:2024-01-01T00:00:00Z")
    plain = api.faceid_tune("plain")
    kept = api.post(
        "/tunes",
        json={
            "tune": {
                "title": "kept",
                "name": "man",
                "model_type": "faceid",
                "auto_extend": True,
                "image_urls": ["https://e.com/a.jpg"],
            }
        },
    ).json()
    moved = api.client.post("/_mock/clock", json={"advance_seconds": 31 * 86400}).json()
    assert moved["now"] == "2024-02-01T00:00:00.000Z"
    assert api.get(f"/tunes/{plain['id']}").status_code == 404
    assert api.get(f"/tunes/{kept['id']}").status_code == 200
    assert plain["id"] not in [t["id"] for t in api.get("/tunes").json()]
    assert api.client.get("/_mock/clock").json() == {
        "now": "2024-02-01T00:00:00.000Z",
        "frozen": True,
    }


def test_advancing_the_clock_finishes_training(make_api):
    api = make_api(train_seconds=3600)
    body = {
        "tune": {
            "title": "slow",
            "name": "man",
            "model_type": "lora",
            "image_urls": ["https://e.com/a.jpg"],
        }
    }
    tune = api.post("/tunes", json=body).json()
    assert tune["trained_at"] is None
    api.client.post("/_mock/clock", json={"advance_seconds": 3600})
    deadline = time.monotonic() + 5
    while api.get(f"/tunes/{tune['id']}").json()["trained_at"] is None:
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_reset_one_tenant_or_all(api: Api):
    mine, theirs = api.faceid_tune("mine"), api.as_key("sd_other").faceid_tune("theirs")
    add_fault(api, {"path": "/prompts", "status": 500}, scoped=True)
    api.client.post("/_mock/reset", headers={"Authorization": f"Bearer {api.key}"})
    assert api.get(f"/tunes/{mine['id']}").status_code == 404
    assert api.get("/prompts").status_code == 200  # the tenant's rules went too
    assert api.as_key("sd_other").get(f"/tunes/{theirs['id']}").status_code == 200
    api.client.post("/_mock/reset")
    assert api.as_key("sd_other").get(f"/tunes/{theirs['id']}").status_code == 404
    assert [t["id"] for t in api.get("/tunes").json()] == [1504944, 690204]
    assert api.faceid_tune("again")["id"] == 1  # sequences start over


def test_admin_token(make_api):
    api = make_api(admin_token="s3cret")
    assert api.client.get(ADMIN).status_code == 401
    assert api.client.get(ADMIN, headers={"X-Admin-Token": "s3cret"}).status_code == 200
    assert api.client.get("/_mock/health").status_code == 200
    tune = api.faceid_tune()
    assert (
        api.client.get(tune["orig_images"][0].removeprefix("http://127.0.0.1:8000")).status_code
        == 200
    )
    assert api.get("/tunes").status_code == 200  # the API itself is not guarded


def test_bad_scenario_is_a_clear_startup_error(tmp_path: Path):
    scenario = tmp_path / "bad.yaml"
    scenario.write_text("faults:\n  - {path: /tunes, status: 418}\n")
    with pytest.raises(ValueError, match="fault 0: status must be one of"):
        LiveServer(DEFAULTS.__class__(ephemeral=True, scenario=scenario))
