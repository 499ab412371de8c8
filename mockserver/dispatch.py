"""The app: Starlette, with the contract's operations routed ahead of Starlette's router.

Starlette's router tries each route in turn (about thirty here, the ``/_mock/`` and
dashboard routes first) and runs every request through its error and exception layers;
on a ``GET /tunes/{id}`` that cost more than the mock's own work around the store read.
The API's paths are few and fixed, so :class:`MockApp` matches them itself: by the
number of path segments, then by one pattern each (integer ids, as Starlette's ``int``
convertor matches them), and calls the operation's endpoint directly. The endpoints catch
every error themselves and answer JSON, as they do behind Starlette's router.

Anything else, and any request the fast path does not serve exactly as the router would
(another method, which answers 405; a ``root_path``; a trailing slash, which redirects;
the lifespan), goes through Starlette unchanged. Middleware given to the app sees only
those requests: middleware meant for API requests too must wrap the whole app.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.types import Receive, Scope, Send

Endpoint = Callable[[Scope, Receive, Send], Awaitable[None]]
"""An operation's whole request chain, as an ASGI app."""
_PARAMETER = re.compile(r"\{(\w+)\}")


def _pattern(template: str) -> re.Pattern[str]:
    """``/tunes/{id}.json`` → ``^/tunes/(?P<id>[0-9]+)\\.json$``."""
    parts = _PARAMETER.split(template)
    regex = "".join(
        re.escape(part) if index % 2 == 0 else f"(?P<{part}>[0-9]+)"
        for index, part in enumerate(parts)
    )
    return re.compile(f"^{regex}$")


class MockApp(Starlette):
    """A Starlette app that serves ``operations`` (path template → method → endpoint)
    without going through its router; the same endpoints should also be among its routes,
    so that whatever the fast path leaves (a 405 with its ``Allow``) answers the same."""

    def __init__(self, operations: Mapping[str, Mapping[str, Endpoint]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._by_depth: dict[int, list[tuple[re.Pattern[str], dict[str, Endpoint]]]] = {}
        for template, endpoints in operations.items():
            methods = dict(endpoints)
            if "GET" in methods:
                methods["HEAD"] = methods["GET"]  # as Starlette's Route does
            depth = self._by_depth.setdefault(template.count("/"), [])
            depth.append((_pattern(template), methods))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):
            path: str = scope["path"]
            for pattern, methods in self._by_depth.get(path.count("/"), ()):
                match = pattern.match(path)
                if match is None:
                    continue
                endpoint = methods.get(scope["method"])
                if endpoint is None:
                    break  # Starlette answers the 405
                scope["app"] = self
                params = match.groupdict()
                scope["path_params"] = {name: int(value) for name, value in params.items()}
                await endpoint(scope, receive, send)
                return
        await super().__call__(scope, receive, send)
