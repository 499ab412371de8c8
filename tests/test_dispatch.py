"""MockApp serves the contract's operations itself and answers everything else as
Starlette's router would: compared with a plain Starlette app of the same routes."""

from __future__ import annotations

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, request_response
from starlette.testclient import TestClient

from mockserver.dispatch import MockApp


def endpoint(name: str):
    async def answer(request: Request) -> Response:
        return JSONResponse(
            {"endpoint": name, "method": request.method, "params": request.path_params}
        )

    return answer


HANDLERS = {
    "/tunes": {"GET": endpoint("list"), "POST": endpoint("create")},
    "/tunes/{id}": {"GET": endpoint("get"), "DELETE": endpoint("delete")},
    "/tunes/{id}.json": {"GET": endpoint("get.json")},
    "/tunes/{tune_id}/prompts/{id}": {"GET": endpoint("prompt")},
}
OPERATIONS = {  # the same handlers as ASGI apps, as MockApp takes them
    path: {method: request_response(handler) for method, handler in handlers.items()}
    for path, handlers in HANDLERS.items()
}


def routes() -> list[Route]:
    return [
        Route(path.replace("}", ":int}"), handlers[method], methods=[method])
        for path, handlers in HANDLERS.items()
        for method in handlers
    ] + [Route("/_mock/health", endpoint("health"), methods=["GET"])]


@pytest.fixture(scope="module")
def clients():
    fast = TestClient(MockApp(OPERATIONS, routes=routes()))
    plain = TestClient(Starlette(routes=routes()))
    return fast, plain


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/tunes"),
        ("POST", "/tunes"),
        ("GET", "/tunes/12"),
        ("HEAD", "/tunes/12"),
        ("DELETE", "/tunes/007"),
        ("GET", "/tunes/12.json"),
        ("GET", "/tunes/3/prompts/4"),
        ("PUT", "/tunes/12"),  # 405 with Allow
        ("GET", "/tunes/x"),  # not an int: 404
        ("GET", "/tunes/12.xml"),
        ("GET", "/tunes/"),  # trailing slash: redirect
        ("GET", "/nothing"),
        ("GET", "/_mock/health"),
        ("GET", "/tunes/1/prompts/"),
    ],
)
def test_answers_as_starlettes_router_does(clients, method, path):
    fast, plain = clients
    ours = fast.request(method, path, follow_redirects=False)
    theirs = plain.request(method, path, follow_redirects=False)
    assert (ours.status_code, ours.content) == (theirs.status_code, theirs.content)
    assert ours.headers.get("allow") == theirs.headers.get("allow")
    assert ours.headers.get("location") == theirs.headers.get("location")


def test_an_operation_gets_integer_path_params(clients):
    fast, _ = clients
    assert fast.get("/tunes/3/prompts/4").json()["params"] == {"tune_id": 3, "id": 4}


def test_operations_are_served_without_the_router():
    app = MockApp({"/only/{id}": {"GET": request_response(endpoint("only"))}}, routes=[])
    client = TestClient(app)
    assert client.get("/only/5").json() == {
        "endpoint": "only",
        "method": "GET",
        "params": {"id": 5},
    }
    assert client.get("/only/5/").status_code == 404  # not an operation: the (empty) router
