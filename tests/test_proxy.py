"""The validating proxy in front of an upstream: traffic passes, violations are logged."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from contracts.proxy import create_proxy
from contracts.servers import LiveServer
from mockserver.settings import Settings

HEADERS = {"Authorization": "Bearer sd_proxy"}


@pytest.fixture
def proxied() -> Iterator[TestClient]:
    with (
        LiveServer(Settings(ephemeral=True)) as upstream,
        TestClient(create_proxy(upstream.url)) as client,
    ):
        yield client


def violations(client: TestClient) -> list[dict]:
    return list(client.get("/_mock/violations", headers=HEADERS).json()["violations"])


def test_good_traffic_passes_unchanged(proxied: TestClient):
    tune = proxied.get("/tunes/690204", headers=HEADERS)
    assert tune.status_code == 200
    assert tune.json()["title"] == "Realistic Vision v5.1"
    created = proxied.post(
        "/tunes/690204/prompts", json={"prompt": {"text": "a cat"}}, headers=HEADERS
    )
    assert created.status_code == 201
    assert proxied.get("/tunes/999999", headers=HEADERS).status_code == 404
    assert violations(proxied) == []


def test_client_violations_are_logged_and_still_forwarded(proxied: TestClient):
    response = proxied.post(
        "/tunes/690204/prompts",
        json={"prompt": {"text": "x", "num_images": "2", "colour": 1}},
        headers=HEADERS,
    )
    assert response.status_code == 422  # the upstream's own answer
    found = {(v["operation"], v["field"], v["source"]) for v in violations(proxied)}
    assert found == {
        ("createPrompt", "num_images", "request"),
        ("createPrompt", "colour", "request"),
    }
    proxied.get("/tuness", headers=HEADERS)
    assert violations(proxied)[-1]["field"] == "operation"


def test_upstream_answers_off_contract_are_logged():
    async def broken_tune(request):
        return JSONResponse({"id": 1, "title": "no timestamps"})

    upstream_app = Starlette(routes=[Route("/tunes/{id}", broken_tune)])
    with LiveServer(app=upstream_app) as upstream, TestClient(create_proxy(upstream.url)) as client:
        assert client.get("/tunes/1", headers=HEADERS).json() == {"id": 1, "title": "no timestamps"}
        found = violations(client)
        assert {v["source"] for v in found} == {"response"}
        assert any('"trained_at" is a required property' in v["message"] for v in found)


def test_unreachable_upstream_is_a_502():
    with LiveServer(Settings(ephemeral=True)) as gone:
        url = gone.url
    with TestClient(create_proxy(url)) as client:
        response = client.get("/tunes", headers=HEADERS)
        assert response.status_code == 502
        assert "unreachable" in response.json()["error"]
