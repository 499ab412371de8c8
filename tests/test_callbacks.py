"""Callbacks reach a real receiver on 127.0.0.1, as the real API would send them."""

from __future__ import annotations

import time

import jsonschema_rs
import pytest
from conftest import CONTRACT, Api, LiveServer, Receiver

from mockserver.callbacks import CONCURRENT_DELIVERIES
from mockserver.settings import Settings

QUERY = "user_id=1&tune_id=1&webhook_secret=a%2Fb%3Dc"
ENVELOPES = {
    name: CONTRACT.compile(f"#/components/schemas/{name.title()}Envelope")
    for name in ("tune", "prompt")
}


def faceid_json(callback: str, title: str = "t") -> dict:
    return {
        "tune": {
            "title": title,
            "name": "man",
            "model_type": "faceid",
            "callback": callback,
            "image_urls": ["https://example.com/face.jpg"],
        }
    }


def lora_with_prompts(title: str, tune_hook: str, prompt_hooks: list[str]) -> dict:
    """A LoRA tune (it trains, then calls back) with one prompt per hook."""
    prompts = [{"text": f"p{i}", "callback": hook} for i, hook in enumerate(prompt_hooks)]
    return {
        "tune": {
            "title": title,
            "name": "woman",
            "model_type": "lora",
            "callback": tune_hook,
            "image_urls": ["https://e.com/a.jpg"],
            "prompts_attributes": prompts,
        }
    }


def callback_log(api: Api, **query) -> dict:
    response = api.client.get(
        "/_mock/callbacks", params=query, headers={"Authorization": f"Bearer {api.key}"}
    )
    assert response.status_code == 200
    return dict(response.json())


def test_faceid_tune_callback_fires_at_creation(api: Api, receiver: Receiver):
    tune = api.post("/tunes", json=faceid_json(f"{receiver.url}/hooks/astria?{QUERY}")).json()
    [hit] = receiver.wait_for(1)
    assert hit["path"] == "/hooks/astria"
    assert hit["query"] == QUERY  # kept exactly as given
    assert hit["headers"]["content-type"] == "application/json"
    assert hit["json"] == {"tune": tune}
    ENVELOPES["tune"].validate(hit["json"])


def test_prompt_callback_carries_the_finished_prompt(api: Api, receiver: Receiver):
    prompt = api.post(
        "/tunes/690204/prompts",
        json={
            "prompt": {
                "text": "a cat",
                "num_images": 2,
                "callback": f"{receiver.url}/p?prompt_id=7",
            }
        },
    ).json()
    assert receiver.received == []
    done = api.complete(prompt["id"])
    [hit] = receiver.wait_for(1)
    assert hit["query"] == "prompt_id=7"
    assert hit["json"] == {"prompt": done}
    assert len(hit["json"]["prompt"]["images"]) == 2
    ENVELOPES["prompt"].validate(hit["json"])


def test_bare_bodies(make_api, receiver: Receiver):
    api = make_api(callback_body="bare")
    tune = api.post("/tunes", json=faceid_json(f"{receiver.url}/t")).json()
    assert receiver.wait_for(1)[0]["json"] == tune


def test_delivery_log_and_wait(api: Api, receiver: Receiver):
    api.post("/tunes", json=faceid_json(f"{receiver.url}/t?x=1"))
    log = callback_log(api, wait=10)
    assert log["timed_out"] is False
    [entry] = log["callbacks"]
    assert entry["entity"] == "tune"
    assert entry["url"] == f"{receiver.url}/t?x=1"
    assert (entry["status"], entry["status_code"], entry["attempts"], entry["error"]) == (
        "delivered",
        204,
        1,
        None,
    )
    assert entry["latency_ms"] >= 0
    assert callback_log(api, entity="prompt")["callbacks"] == []
    assert callback_log(api.as_key("sd_other"))["callbacks"] == []
    cleared = api.client.request(
        "DELETE", "/_mock/callbacks", headers={"Authorization": f"Bearer {api.key}"}
    )
    assert cleared.status_code == 200
    assert callback_log(api)["callbacks"] == []


def test_wait_times_out_when_nothing_comes(api: Api):
    log = callback_log(api, wait=0.2)
    assert log == {"callbacks": [], "timed_out": True}


def test_one_attempt_by_default(api: Api, receiver: Receiver):
    receiver.fail_next = 1
    api.post("/tunes", json=faceid_json(f"{receiver.url}/t"))
    [entry] = callback_log(api, wait=10)["callbacks"]
    assert (entry["status"], entry["attempts"], entry["status_code"]) == ("failed", 1, 500)
    assert "500" in entry["error"]
    assert len(receiver.received) == 1


def test_retries_when_asked(make_api, receiver: Receiver):
    api = make_api(callback_retries=3)
    receiver.fail_next = 2
    api.post("/tunes", json=faceid_json(f"{receiver.url}/t"))
    [entry] = callback_log(api, wait=15, status="delivered")["callbacks"]
    assert entry["attempts"] == 3
    assert len(receiver.received) == 3


def test_unreachable_receiver_is_logged(api: Api):
    with LiveServer(Settings(ephemeral=True)) as gone:
        url = gone.url
    api.post("/tunes", json=faceid_json(f"{url}/t"))
    [entry] = callback_log(api, wait=10)["callbacks"]
    assert entry["status"] == "failed"
    assert entry["status_code"] is None
    assert "Connect" in entry["error"]


@pytest.mark.parametrize(
    "url", ["ftp://example.com/x", "mailto:someone@example.com", "file:///etc/passwd"]
)
def test_only_http_callbacks(api: Api, url):
    response = api.post("/tunes", json=faceid_json(url))
    assert response.status_code == 422
    assert "callback" in response.json()


def test_allow_list(make_api, receiver: Receiver):
    api = make_api(callback_allow=("127.0.0.0/8", "*.example.com"))
    assert api.post("/tunes", json=faceid_json(f"{receiver.url}/ok", "a")).status_code == 201
    assert (
        api.post("/tunes", json=faceid_json("https://hooks.example.com/x", "b")).status_code == 201
    )
    refused = api.post("/tunes", json=faceid_json("https://evil.test/x", "c"))
    assert refused.status_code == 422
    assert "evil.test" in refused.json()["callback"][0]
    prompt = api.post(
        "/tunes/690204/prompts", json={"prompt": {"text": "x", "callback": "http://10.1.2.3/x"}}
    )
    assert prompt.status_code == 422
    nested = {
        "tune": {
            "title": "n",
            "name": "man",
            "branch": "fast",
            "image_urls": ["https://e.com/a.jpg"],
            "prompts_attributes": [{"text": "x", "callback": "http://evil.test/"}],
        }
    }
    response = api.post("/tunes", json=nested)
    assert response.status_code == 422
    assert "prompts_attributes[0].callback" in response.json()


def test_tune_callback_before_its_prompts(make_api, receiver: Receiver):
    api = make_api(train_seconds=0.2, prompt_seconds=0.0)
    hooks = [f"{receiver.url}/prompt?i={i}" for i in range(3)]
    body = lora_with_prompts("lora", f"{receiver.url}/tune", hooks)
    assert api.post("/tunes", json=body).status_code == 201
    hits = receiver.wait_for(4)
    assert hits[0]["path"] == "/tune"
    assert hits[0]["json"]["tune"]["trained_at"] is not None
    assert sorted(h["query"] for h in hits[1:]) == ["i=0", "i=1", "i=2"]


def test_a_thousand_prompts_each_called_back_once(make_api, receiver: Receiver):
    api = make_api(prompt_seconds=0.0)
    count = 1000
    for i in range(count):
        response = api.post(
            "/tunes/690204/prompts",
            json={
                "prompt": {"text": f"p{i}", "w": 64, "h": 64, "callback": f"{receiver.url}/p?n={i}"}
            },
        )
        assert response.status_code == 201
    hits = receiver.wait_for(count, timeout=120)
    log = callback_log(api, wait=30, count=count)["callbacks"]
    assert len(log) == count
    assert {entry["status"] for entry in log} == {"delivered"}
    queries = sorted(int(h["query"].removeprefix("n=")) for h in hits)
    assert queries == list(range(count))  # none lost, none twice


def test_body_schema_check_catches_a_wrong_body():
    with pytest.raises(jsonschema_rs.ValidationError):
        ENVELOPES["prompt"].validate({"prompt": {"id": "x"}})


def test_a_prompt_callback_waits_for_its_tune_callback_still_in_flight(
    make_api, receiver: Receiver
):
    api = make_api(train_seconds=0.2, prompt_seconds=0.0)
    receiver.delay = 1.0  # the tune's delivery is still running when its prompts are done
    hooks = [f"{receiver.url}/prompt"] * 2
    body = lora_with_prompts("slow hook", f"{receiver.url}/tune", hooks)
    assert api.post("/tunes", json=body).status_code == 201
    receiver.wait_for(3)
    paths = [hit["path"] for hit in receiver.received]
    assert paths == ["/tune", "/prompt", "/prompt"]
    # Sent only once the tune's receiver had answered, not merely after it was sent.
    events = receiver.events
    assert events.index(("answered", "/tune")) < events.index(("received", "/prompt"))
    log = callback_log(api, wait=15, count=3, status="delivered")["callbacks"]
    assert [entry["interrupted"] for entry in log] == [0, 0, 0]


def test_deliveries_in_flight_stay_within_the_bound_and_the_rest_follow(
    make_api, receiver: Receiver
):
    api = make_api(prompt_seconds=0.0)
    count = CONCURRENT_DELIVERIES + 8
    receiver.gate.clear()  # the receiver holds every request until the gate opens
    try:
        for i in range(count):
            body = {"prompt": {"text": f"p{i}", "w": 64, "h": 64, "callback": f"{receiver.url}/p"}}
            assert api.post("/tunes/690204/prompts", json=body).status_code == 201
        receiver.wait_for(CONCURRENT_DELIVERIES)
        deadline = time.monotonic() + 30
        while len(callback_log(api)["callbacks"]) < count:  # every prompt done
            assert time.monotonic() < deadline, "prompts did not finish"
            time.sleep(0.02)
        pending = callback_log(api, status="pending")["callbacks"]
        assert len(pending) == count  # none answered yet
        assert len(receiver.received) == CONCURRENT_DELIVERIES  # the rest wait their turn
    finally:
        receiver.gate.set()
    log = callback_log(api, wait=30, count=count, status="delivered")["callbacks"]
    assert len(log) == count
    assert receiver.most_in_flight == CONCURRENT_DELIVERIES
    ids = sorted(int(hit["headers"]["x-astria-mock-callback"]) for hit in receiver.received)
    assert ids == sorted(entry["id"] for entry in log)  # each once


def test_a_delivery_longer_than_the_lease_is_not_taken_over(make_api, receiver: Receiver):
    api = make_api(lease_seconds=0.6)
    receiver.delay = 2.0  # more than three leases: held only because they are renewed
    api.post("/tunes", json=faceid_json(f"{receiver.url}/t"))
    receiver.wait_for(1)
    time.sleep(1.0)  # past the first lease; then the dispatcher looks for due rows
    assert api.client.post("/_mock/clock", json={"advance_seconds": 0}).status_code == 200
    [entry] = callback_log(api, wait=15, status="delivered")["callbacks"]
    assert (entry["attempts"], entry["interrupted"]) == (1, 0)
    assert len(receiver.received) == 1


def test_credentials_in_the_callback_url_are_sent_as_basic_auth(api: Api, receiver: Receiver):
    host = receiver.url.removeprefix("http://")
    api.post("/tunes", json=faceid_json(f"http://hook:s%40cret@{host}/t?sig=a%2Fb"))
    [hit] = receiver.wait_for(1)
    assert hit["headers"]["authorization"] == "Basic aG9vazpzQGNyZXQ="  # hook:s@cret
    assert hit["query"] == "sig=a%2Fb"


def test_a_receiver_slower_than_the_timeout_is_logged_as_a_timeout(make_api, receiver: Receiver):
    api = make_api(callback_timeout=0.3)
    receiver.delay = 2.0
    api.post("/tunes", json=faceid_json(f"{receiver.url}/t"))
    [entry] = callback_log(api, wait=10)["callbacks"]
    assert (entry["status"], entry["status_code"]) == ("failed", None)
    assert entry["error"] == "Timeout: no answer within 0.3 s"
