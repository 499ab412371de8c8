"""pytest plugin: the mock for a client's test suite, with contract checking built in.

Installed with astria-mock (entry point ``pytest11``). Add one fixture to a test::

    def test_my_client(astria_mock):
        client = MyAstriaClient(base_url=astria_mock.url, api_key=astria_mock.api_key)
        ...

``astria_mock`` is a mock on a real port of 127.0.0.1, shared by the session; each
test gets its own API key and so its own tenant (a clean slate). At teardown the test
fails when the client sent anything off the contract. ``astria_mock_app`` is the same
in process (an httpx client over the ASGI app, no port). Override the
``astria_mock_settings`` fixture to change the mock's settings, and mark a test
``@pytest.mark.astria_mock_allow_violations`` to let it send bad requests on purpose.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from mockserver.app import create_app
from mockserver.settings import Settings

from .servers import LiveServer

with warnings.catch_warnings():
    # Starlette 1.x suggests httpx2 for its TestClient; httpx is what the kit ships with.
    warnings.simplefilter("ignore", DeprecationWarning)
    from starlette.testclient import TestClient

ALLOW_MARK = "astria_mock_allow_violations"


class MockHandle:
    """A running mock as a test sees it: where it is, its key, what it saw and sent."""

    def __init__(self, client: httpx.Client | TestClient, url: str, api_key: str) -> None:
        self.url = url
        self.api_key = api_key
        self._client = client

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def client(self) -> httpx.Client | TestClient:
        """An httpx client for the API with this test's key (closed with the test); in
        process, Starlette's TestClient (an httpx or, where installed, httpx2 client)."""
        return self._client

    def violations(self) -> list[dict[str, Any]]:
        """How this test's requests broke the contract."""
        response = self._client.get("/_mock/violations")
        response.raise_for_status()
        return list(response.json()["violations"])

    def callbacks(self, wait: float = 0.0, count: int = 1, **filters: Any) -> list[dict[str, Any]]:
        """The callbacks the mock sent for this test; ``wait`` blocks until ``count`` finished."""
        params = {"wait": wait, "count": count, **filters}
        response = self._client.get("/_mock/callbacks", params=params, timeout=wait + 10)
        response.raise_for_status()
        return list(response.json()["callbacks"])

    def complete(self, prompt_id: int) -> dict[str, Any]:
        """Finish a prompt now instead of waiting for it."""
        response = self._client.post(f"/_mock/prompts/{prompt_id}/complete")
        response.raise_for_status()
        return dict(response.json())


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{ALLOW_MARK}: do not fail the test for contract violations it sends"
    )


def _key_for(request: pytest.FixtureRequest) -> str:
    digest = hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:24]
    return f"sd_test_{digest}"


def _check_violations(request: pytest.FixtureRequest, mock: MockHandle) -> None:
    found = mock.violations()
    if found and request.node.get_closest_marker(ALLOW_MARK) is None:
        lines = [
            f"- {v['operation']}: {v['field']} {v['message']} "
            f"({v['request']['method']} {v['request']['path']})"
            for v in found
        ]
        details = json.dumps([v["request"] for v in found], indent=2, default=str)
        pytest.fail(
            "the client sent requests off the Astria contract:\n"
            + "\n".join(lines)
            + f"\nrequests:\n{details}",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def astria_mock_settings() -> Settings:
    """The mock's settings; override this fixture to change them."""
    return Settings(ephemeral=True, prompt_seconds=0.5, train_seconds=1.0)


@pytest.fixture(scope="session")
def astria_mock_server(astria_mock_settings: Settings) -> Iterator[LiveServer]:
    with LiveServer(astria_mock_settings) as server:
        yield server


@pytest.fixture
def astria_mock(
    request: pytest.FixtureRequest, astria_mock_server: LiveServer
) -> Iterator[MockHandle]:
    """The mock on a real port, with a key of this test's own; fails on contract violations."""
    key = _key_for(request)
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=astria_mock_server.url, headers=headers, trust_env=False) as client:
        mock = MockHandle(client, astria_mock_server.url, key)
        yield mock
        _check_violations(request, mock)


@pytest.fixture
def astria_mock_app(
    request: pytest.FixtureRequest, astria_mock_settings: Settings
) -> Iterator[MockHandle]:
    """The mock in process (no port): use ``.client()``; fails on contract violations."""
    key = _key_for(request)
    base_url = "http://127.0.0.1:8000"
    app = create_app(astria_mock_settings)
    with TestClient(app, base_url=base_url, headers={"Authorization": f"Bearer {key}"}) as client:
        mock = MockHandle(client, base_url, key)
        yield mock
        _check_violations(request, mock)
