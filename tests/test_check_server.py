"""``astria-mock check-server``: our mock passes it; broken servers fail it, naming the problem;
``--live`` sends only positive data and ``branch=fast`` tunes. Everything on 127.0.0.1."""

from __future__ import annotations

import io
import json
import re
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from email import policy
from email.parser import BytesParser
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from contracts.server_check import Options, Report, check_server
from contracts.servers import LiveServer
from mockserver.app import create_app
from mockserver.cli import main
from mockserver.settings import Settings

KEY = "sd_check_server_key"
# A fixed key, so requests with another one get 401; callbacks only to the kit's receiver;
# prompts left to the kit (which finishes its own through /_mock/prompts/{id}/complete).
SETTINGS = Settings(
    ephemeral=True,
    api_keys=(KEY,),
    prompt_seconds=120.0,
    train_seconds=120.0,
    callback_allow=("127.0.0.1",),
)

Rewrite = Callable[[Scope, int, bytes], tuple[int, bytes]]


class Mock:
    """The mock on a port, optionally behind an ASGI middleware that breaks or records it."""

    def __init__(self, wrap: Callable[[ASGIApp], ASGIApp] | None = None, **settings: Any) -> None:
        app: list[ASGIApp] = []

        async def late(scope: Scope, receive: Receive, send: Send) -> None:
            await app[0](scope, receive, send)

        # The port comes first: the mock writes it into the URLs of its answers.
        self.server = LiveServer(app=late)
        self.url = self.server.url
        mock = create_app(replace(SETTINGS, port=self.server.port, **settings))
        app.append(wrap(mock) if wrap else mock)

    def __enter__(self) -> Mock:
        self.server.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.__exit__(None, None, None)


def rewriting(rewrite: Rewrite) -> Callable[[ASGIApp], ASGIApp]:
    """A middleware that hands each API answer (status, body) to ``rewrite``."""

    def wrap(app: ASGIApp) -> ASGIApp:
        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http" or scope["path"].startswith("/_mock/"):
                await app(scope, receive, send)
                return
            start: dict[str, Any] = {}
            chunks: list[bytes] = []

            async def capture(message: Message) -> None:
                if message["type"] == "http.response.start":
                    start.update(message)
                    return
                chunks.append(message.get("body", b""))
                if message.get("more_body"):
                    return
                status, body = rewrite(scope, start["status"], b"".join(chunks))
                headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
                headers.append((b"content-length", str(len(body)).encode()))
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": body})

            await app(scope, receive, capture)

        return middleware

    return wrap


def run(mock: Mock, **options: Any) -> tuple[Report, str]:
    out = io.StringIO()
    settings: dict[str, Any] = {"seed": 7, "max_examples": 3, **options}
    report = check_server(Options(url=mock.url, api_key=KEY, **settings), out=out)
    return report, out.getvalue()


def failures(report: Report, name: str) -> str:
    check = report.checks[name]
    return "\n".join(f"{f.title}\n{f.message}\n{f.curl}" for f in check.findings)


# ---- our own mock -------------------------------------------------------------------------


def test_the_mock_passes_every_check(tmp_path, capsys):
    junit = tmp_path / "report.xml"
    with Mock() as mock:
        code = main(
            [
                "check-server",
                mock.url,
                "--api-key",
                KEY,
                "--seed",
                "7",
                "--max-examples",
                "3",
                "--junit-xml",
                str(junit),
            ]
        )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "seed: 7 (replay with --seed 7)" in out.splitlines()[1]
    assert "OK: every check held" in out
    for name in ("not_a_server_error", "response_schema_conformance", "negative_data_rejection"):
        assert re.search(rf"PASS {name}: [1-9]\d* passed", out), name
    for name in (
        "tune_create_201",
        "faceid_trained_at_creation",
        "faceid_prompt_422",
        "offset_too_deep_400",
        "prompt_images_download",
        "tune_callback_body",
        "prompt_callback_body",
        "callback_bodies",
    ):
        assert f"PASS {name}:" in out, name
    cases = re.search(r"cases: examples (\d+), coverage (\d+), fuzzing (\d+), stateful (\d+)", out)
    assert cases is not None, out
    assert all(int(n) > 0 for n in cases.groups()), out
    suites = {s.get("name"): s for s in ET.parse(junit).getroot()}
    assert set(suites) == {"schemathesis", "astria"}
    assert all(s.get("failures") == "0" for s in suites.values())
    assert suites["astria"].find("testcase[@name='prompt_images_download']") is not None


def test_without_a_key_it_says_how_to_get_one(monkeypatch, capsys):
    monkeypatch.delenv("ASTRIA_API_KEY", raising=False)
    assert main(["check-server", "http://127.0.0.1:9"]) == 2
    assert "--api-key" in capsys.readouterr().err
    assert main(["check-server", "http://127.0.0.1:9", "--live"]) == 2
    assert "ASTRIA_API_KEY" in capsys.readouterr().err


def test_help_documents_every_option(capsys):
    with pytest.raises(SystemExit):
        main(["check-server", "--help"])
    text = capsys.readouterr().out
    for option in ("--api-key", "--seed", "--max-examples", "--phases", "--junit-xml", "--live"):
        assert option in text
    assert "--api-key sd_check" in text  # how to start the mock for it
    with pytest.raises(SystemExit):
        main(["check-server", "http://127.0.0.1:9", "--phases", "examples,bogus"])
    assert "unknown phase bogus" in capsys.readouterr().err


def test_an_unreachable_server_is_an_error():
    report = check_server(
        Options(url="http://127.0.0.1:9", api_key=KEY, seed=1, phases=("astria",)),
        out=io.StringIO(),
    )
    assert not report.ok
    assert "cannot be reached" in report.errors[0]


# ---- broken servers -----------------------------------------------------------------------


def created_with_200(scope: Scope, status: int, body: bytes) -> tuple[int, bytes]:
    if scope["method"] == "POST" and scope["path"] == "/tunes" and status == 201:
        return 200, body
    return status, body


def test_200_instead_of_201_on_tune_creation_fails():
    with Mock(rewriting(created_with_200)) as mock:
        report, out = run(mock, phases=("examples", "astria"))
    assert not report.ok
    assert "POST /tunes answered 200" in failures(report, "tune_create_201")
    assert "FAIL tune_create_201" in out
    conformance = failures(report, "status_code_conformance")
    assert "POST /tunes" in out
    assert "200" in conformance
    assert "curl -X POST" in conformance


def dropping(field_name: str) -> Rewrite:
    def rewrite(scope: Scope, status: int, body: bytes) -> tuple[int, bytes]:
        try:
            value = json.loads(body)
        except ValueError:
            return status, body
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, dict):
                item.pop(field_name, None)
        return status, json.dumps(value).encode()

    return rewrite


def test_a_tune_without_trained_at_fails():
    with Mock(rewriting(dropping("trained_at"))) as mock:
        report, _ = run(mock, phases=("examples", "astria"))
    assert not report.ok
    assert re.search(
        r"[\"']trained_at[\"'] is a required property",
        failures(report, "response_schema_conformance"),
    )
    assert "trained_at is missing" in failures(report, "faceid_trained_at_creation")


def test_a_prompt_without_images_fails():
    with Mock(rewriting(dropping("images"))) as mock:
        report, _ = run(mock, phases=("examples", "astria"))
    assert not report.ok
    assert re.search(
        r"[\"']images[\"'] is a required property", failures(report, "response_schema_conformance")
    )
    assert "images" in failures(report, "prompt_images_download")


def server_error_on_bad_input(scope: Scope, status: int, body: bytes) -> tuple[int, bytes]:
    if status in (400, 422):
        return 500, b'{"error": "Internal server error"}'
    return status, body


def test_500_on_bad_input_fails():
    with Mock(rewriting(server_error_on_bad_input)) as mock:
        report, out = run(mock, phases=("fuzzing", "astria"))
    assert not report.ok
    found = failures(report, "not_a_server_error")
    assert "Server error" in found
    assert "answered 500" in found
    assert "faceid_prompt_422" in [c.name for c in report.failed]
    assert "FAIL not_a_server_error" in out


def test_429s_carry_retry_after():
    with Mock(rate_limit="20/s") as mock:
        report, out = run(mock, phases=("examples", "astria"))
    assert report.ok, out
    assert report.checks["retry_after_on_429"].passed > 0, out


def without_retry_after(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        async def strip(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 429:
                headers = [(k, v) for k, v in message["headers"] if k.lower() != b"retry-after"]
                message = {**message, "headers": headers}
            await send(message)

        await app(scope, receive, strip)

    return middleware


def test_a_429_without_retry_after_fails():
    with Mock(without_retry_after, rate_limit="20/s") as mock:
        report, _ = run(mock, phases=("examples", "astria"))
    assert not report.ok
    assert "429 without Retry-After" in failures(report, "retry_after_on_429")
    assert "Retry-After" in failures(report, "response_headers_conformance")


# ---- --live -------------------------------------------------------------------------------


@dataclass
class Recorded:
    method: str
    path: str
    content_type: str
    body: bytes
    status: int = 0
    answer: bytes = b""


@dataclass
class Recorder:
    """Every API request the mock got, with its answer."""

    requests: list[Recorded] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wrap(self, app: ASGIApp) -> ASGIApp:
        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http" or scope["path"].startswith("/_mock/"):
                await app(scope, receive, send)
                return
            chunks: list[bytes] = []
            more = True
            while more:
                message = await receive()
                chunks.append(message.get("body", b""))
                more = message.get("more_body", False)
            headers = dict(scope["headers"])
            item = Recorded(
                scope["method"],
                scope["path"],
                headers.get(b"content-type", b"").decode(),
                b"".join(chunks),
            )
            replayed = False

            async def replay() -> Message:
                nonlocal replayed
                if replayed:
                    return await receive()
                replayed = True
                return {"type": "http.request", "body": item.body, "more_body": False}

            async def capture(message: Message) -> None:
                if message["type"] == "http.response.start":
                    item.status = message["status"]
                else:
                    item.answer += message.get("body", b"")
                await send(message)

            with self.lock:
                self.requests.append(item)
            await app(scope, replay, capture)

        return middleware


def form_fields(item: Recorded) -> dict[str, Any]:
    """The fields of a recorded body, whatever its media type (files by name)."""
    if item.content_type.startswith("application/json"):
        return dict(json.loads(item.body))
    if item.content_type.startswith("application/x-www-form-urlencoded"):
        return dict(parse_qsl(item.body.decode()))
    head = f"Content-Type: {item.content_type}\r\n\r\n".encode()
    message = BytesParser(policy=policy.default).parsebytes(head + item.body)
    fields: dict[str, Any] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True) or b""
        fields[str(name)] = payload.decode("utf-8", "replace")
    return fields


def branch_of(item: Recorded) -> Any:
    fields = form_fields(item)
    if "tune" in fields and isinstance(fields["tune"], dict):
        return fields["tune"].get("branch")
    return fields.get("tune[branch]")


@pytest.fixture(scope="module")
def recorded_live_run() -> Iterator[tuple[Report, Recorder, list[dict[str, Any]]]]:
    recorder = Recorder()
    with Mock(recorder.wrap) as mock:
        report, _ = run(mock, live=True, rate=None)
        answer = httpx.get(
            f"{mock.url}/_mock/violations", headers={"Authorization": f"Bearer {KEY}"}
        )
        yield report, recorder, answer.json()["violations"]


def test_live_passes_against_the_mock(recorded_live_run):
    report, _, _ = recorded_live_run
    assert report.ok, [(c.name, failures(report, c.name)) for c in report.failed]
    assert report.checks["live_cleanup"].passed >= 1
    assert report.checks["offset_too_deep_400"].not_run
    assert report.checks["tune_callback_body"].not_run


def test_live_sends_no_negative_data(recorded_live_run):
    _, recorder, violations = recorded_live_run
    assert violations == []
    keyed = [r for r in recorder.requests if r.status != 401]
    assert keyed
    # 422s only from the documented FaceID rule, never from a body off the contract
    for item in keyed:
        if item.status in (400, 422):
            assert json.loads(item.answer) == {
                "base": ["model_type=faceid is not supported. Use a checkpoint instead"]
            }, (item.method, item.path, item.answer)


def test_live_creates_only_fast_tunes_and_touches_only_its_own(recorded_live_run):
    _, recorder, _ = recorded_live_run
    creations = [r for r in recorder.requests if r.method == "POST" and r.path == "/tunes"]
    assert creations
    assert {branch_of(r) for r in creations if r.status != 401} == {"fast"}
    created = {
        json.loads(r.answer)["id"] for r in creations if r.status == 201 and r.answer.strip()
    }
    prompted = {
        int(m.group(1))
        for r in recorder.requests
        if r.method == "POST" and r.status != 401
        for m in [re.fullmatch(r"/tunes/(\d+)/prompts", r.path)]
        if m is not None
    }
    assert prompted
    assert prompted <= created, prompted - created
    assert not prompted & {690204, 1504944}
    own_prompts = {
        json.loads(r.answer)["id"]
        for r in recorder.requests
        if r.method == "POST" and r.status == 201 and "/prompts" in r.path
    }
    duplicated = {
        int(m.group(1))
        for r in recorder.requests
        if r.method == "POST" and r.status != 401
        for m in [re.fullmatch(r"/prompts/(\d+)/duplicate", r.path)]
        if m is not None
    }
    assert duplicated
    assert duplicated <= own_prompts, duplicated - own_prompts
    deleted = {
        int(r.path.rsplit("/", 1)[1])
        for r in recorder.requests
        if r.method == "DELETE" and r.status != 401
    }
    assert deleted
    assert deleted <= created
    assert not [r for r in recorder.requests if r.method not in ("GET", "POST", "DELETE", "HEAD")]
    assert not [r for r in recorder.requests if "/likes" in r.path]
