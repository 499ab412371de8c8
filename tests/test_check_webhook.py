"""``astria-mock check-webhook``: every valid callback body, sent to a receiver on 127.0.0.1."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from contracts.servers import LiveServer
from contracts.webhook_check import (
    check_webhook,
    component_validator,
    example_bodies,
    generated_bodies,
)
from mockserver.cli import main
from mockserver.contract import load_document


class Receiver:
    """A webhook receiver that keeps what it got and answers what ``decide`` says."""

    def __init__(self, refuse_prompts_with_images: bool = False) -> None:
        self.refuse = refuse_prompts_with_images
        self.bodies: list[Any] = []
        self._lock = threading.Lock()
        app = Starlette(routes=[Route("/hooks/astria", self.hook, methods=["POST"])])
        self.server = LiveServer(app=app)
        self.url = f"{self.server.url}/hooks/astria?user_id=1"

    async def hook(self, request: Request) -> Response:
        body = json.loads(await request.body())
        assert request.headers["content-type"] == "application/json"
        assert request.query_params["user_id"] == "1"
        with self._lock:
            self.bodies.append(body)
        prompt = body.get("prompt") if isinstance(body, dict) else None
        if self.refuse and isinstance(prompt, dict) and prompt.get("images"):
            return JSONResponse({"error": "prompts with images are not handled"}, status_code=400)
        return Response(status_code=204)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    hook = Receiver()
    with hook.server:
        yield hook


@pytest.fixture
def picky_receiver() -> Iterator[Receiver]:
    hook = Receiver(refuse_prompts_with_images=True)
    with hook.server:
        yield hook


def test_a_receiver_that_takes_everything_passes(receiver, capsys):
    code = main(["check-webhook", receiver.url, "--count", "10", "--seed", "3"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "seed: 3 (replay with --seed 3)" in out
    assert "OK: all" in out
    kinds = {next(iter(body)) for body in receiver.bodies}
    assert {"tune", "prompt"} <= kinds
    assert len(receiver.bodies) > 20  # examples, then generated bodies of both kinds


def test_every_body_sent_is_a_valid_envelope(receiver):
    check_webhook(receiver.url, count=10, seed=5, out=io.StringIO())
    document = load_document()
    validators = {
        "tune": component_validator(document, "TuneEnvelope"),
        "prompt": component_validator(document, "PromptEnvelope"),
    }
    for body in receiver.bodies:
        kind = "tune" if "tune" in body else "prompt"
        assert validators[kind].is_valid(body), body


def test_a_receiver_that_refuses_prompts_with_images_fails(picky_receiver):
    out = io.StringIO()
    assert check_webhook(picky_receiver.url, count=10, seed=3, out=out) == 1
    text = out.getvalue()
    assert "FAILED:" in text
    assert "answered 400" in text
    assert "prompts with images are not handled" in text
    # the spec's own finished prompt is among the refused bodies, shown as sent
    assert "FAIL example PromptCallback/finished" in text
    assert 'body sent: {"prompt": {' in text
    refused = text.count("\nFAIL ")
    with_images = sum(
        1 for body in picky_receiver.bodies if (body.get("prompt") or {}).get("images")
    )
    assert refused == with_images > 0


def test_an_unreachable_receiver_fails():
    out = io.StringIO()
    assert check_webhook("http://127.0.0.1:9/hook", count=1, seed=1, out=out) == 1
    assert "ConnectError" in out.getvalue()


def test_the_examples_come_from_the_spec():
    sources = {body.source for body in example_bodies(load_document())}
    assert "example TuneCallback/faceid" in sources
    assert "example PromptCallback/finished" in sources
    assert "example FailedPrompt" in sources


def test_generation_is_seeded():
    document = load_document()
    first = generated_bodies(document, 5, seed=11)
    assert first == generated_bodies(document, 5, seed=11)
    assert {body.kind for body in first} == {"tune", "prompt"}


def test_help_documents_every_option(capsys):
    with pytest.raises(SystemExit):
        main(["check-webhook", "--help"])
    text = capsys.readouterr().out
    for option in ("--count", "--seed", "--timeout", "URL"):
        assert option in text
