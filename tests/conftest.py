"""Fixtures that start the real app: in process (Starlette's TestClient, an httpx client
over the ASGI app, lifespan included) and on a real port (uvicorn in a thread).

Every API answer that passes through ``api`` is checked against openapi.yaml.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.testclient import TestClient

from contracts.servers import LiveServer
from mockserver.app import create_app
from mockserver.contract import Contract
from mockserver.settings import Settings
from mockserver.store import Store

KEY = "sd_test_key_one"
OTHER_KEY = "sd_test_key_two"
BASE = "http://127.0.0.1:8000"
CONTRACT = Contract.load()


def jpeg(color: tuple[int, int, int] = (200, 120, 90), size: tuple[int, int] = (64, 64)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "JPEG")
    return out.getvalue()


def check_contract(response: httpx.Response) -> None:
    """Fail when an API answer is not what openapi.yaml promises."""
    request = response.request
    found = CONTRACT.match(request.method, request.url.path)
    if found is None:
        return
    operation, _ = found
    body = response.json() if response.content else None
    problems = operation.check_response(response.status_code, body)
    assert not problems, f"{request.method} {request.url.path} → {response.status_code}: {problems}"


class Api:
    """A client of the mock that sends a bearer key and checks every answer."""

    def __init__(self, client: httpx.Client, key: str = KEY) -> None:
        self.client = client
        self.key = key

    def as_key(self, key: str) -> Api:
        return Api(self.client, key)

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.key}", **kwargs.pop("headers", {})}
        response = self.client.request(method, url, headers=headers, **kwargs)
        check_contract(response)
        return response

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def delete(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("DELETE", url, **kwargs)

    def complete(self, prompt_id: int) -> dict[str, Any]:
        response = self.client.post(f"/_mock/prompts/{prompt_id}/complete")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def faceid_tune(self, title: str = "John Doe", image: bytes | None = None) -> dict[str, Any]:
        files = [("tune[images][]", ("face.jpg", image or jpeg(), "image/jpeg"))]
        data = {"tune[title]": title, "tune[name]": "man", "tune[model_type]": "faceid"}
        response = self.post("/tunes", data=data, files=files)
        assert response.status_code == 201, response.text
        return dict(response.json())


DEFAULTS = Settings(ephemeral=True, prompt_seconds=60.0, train_seconds=60.0)
GALLERY_TUNE = {
    "id": 690204, "tenant": "", "title": "t", "model_type": None, "branch": "sd15",
    "attrs": {}, "orig_images": [], "created_at": "x", "updated_at": "x",
}  # fmt: skip
"""A gallery tune's row, for tests of the store on its own."""


def prompt_values(prompt_id: int, tenant: str = "t") -> dict[str, Any]:
    """A prompt's row on the gallery tune, for tests of the store on its own."""
    return {
        "id": prompt_id, "tenant": tenant, "tune_id": 690204, "attrs": {}, "idem_key": None,
        "created_at": "x", "updated_at": "x",
    }  # fmt: skip


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A store on disk (SQLite) holding the gallery tune."""
    store = Store(f"sqlite:///{tmp_path / 'mock.sqlite3'}", lambda: "2026-01-01T00:00:00.000Z")
    with store.begin() as tx:
        tx.ensure_tune(GALLERY_TUNE)
    yield store
    store.close()


MakeApi = Callable[..., Api]


@pytest.fixture
def make_api() -> Iterator[MakeApi]:
    """``make_api(**settings)`` → an in-process mock with those settings."""
    clients: list[TestClient] = []

    def make(**overrides: Any) -> Api:
        client = TestClient(create_app(replace(DEFAULTS, **overrides)), base_url=BASE)
        client.__enter__()
        clients.append(client)
        return Api(client)

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def api(make_api: MakeApi) -> Api:
    return make_api()


@pytest.fixture
def live_api() -> Iterator[Api]:
    with LiveServer(DEFAULTS) as server, httpx.Client(base_url=server.url) as client:
        yield Api(client)


class Receiver:
    """A webhook receiver on 127.0.0.1 that records every request it gets."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.fail_next = 0
        self.delay = 0.0
        """Seconds to wait, after recording a request, before answering it."""
        self.gate = threading.Event()
        self.gate.set()
        """Cleared: requests are held, after being recorded, until it is set again."""
        self.events: list[tuple[str, str]] = []
        """``("received", path)`` and ``("answered", path)``, in the order they happened."""
        self.in_flight = 0
        self.most_in_flight = 0
        self._lock = threading.Lock()
        app = Starlette(routes=[Route("/{path:path}", self._record, methods=["POST"])])
        self.server = LiveServer(DEFAULTS, app=app)
        self.url = self.server.url

    async def _record(self, request: Request) -> Response:
        body = await request.body()
        with self._lock:
            self.received.append(
                {
                    "path": request.url.path,
                    "query": request.url.query,
                    "headers": dict(request.headers),
                    "json": json.loads(body),
                }
            )
            self.events.append(("received", request.url.path))
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            status = 204
            if self.fail_next > 0:
                self.fail_next -= 1
                status = 500
        try:
            while not self.gate.is_set():
                await anyio.sleep(0.01)
            if self.delay and status == 204:
                await anyio.sleep(self.delay)
        finally:
            with self._lock:
                self.in_flight -= 1
                self.events.append(("answered", request.url.path))
        return Response(status_code=status)

    def wait_for(self, count: int, timeout: float = 15.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            assert time.monotonic() < deadline, f"got {len(self.received)} of {count} callbacks"
            time.sleep(0.01)
        return list(self.received)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    hook = Receiver()
    with hook.server:
        yield hook


def spawn_mock(
    *args: str, env: dict[str, str] | None = None, command: str = "serve"
) -> tuple[subprocess.Popen[str], str]:
    """``astria-mock COMMAND --port 0 ARGS`` as a process; returns it and the URL it printed."""
    process = subprocess.Popen(
        [sys.executable, "-m", "mockserver.cli", command, "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
    )
    assert process.stdout is not None
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        match = re.search(r"listening on (http://\S+)|(taking work from)", line)
        if match:
            return process, match.group(1) or ""
    process.kill()
    raise AssertionError(f"astria-mock {command} printed no start line")


POSTGRES_ADMIN_URL = os.environ.get(
    "ASTRIA_MOCK_TEST_POSTGRES", "postgresql://root@127.0.0.1:5432/test"
)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped after it. Skipped, with the
    reason, where no server answers (set ASTRIA_MOCK_TEST_POSTGRES to point at one)."""
    psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed")
    try:
        admin = psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL at {POSTGRES_ADMIN_URL}: {exc}".strip())
    name = f"astria_mock_test_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
