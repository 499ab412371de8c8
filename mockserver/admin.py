"""``/_mock/...``: our own control API, outside the contract (fuzzing never reaches it)."""

from __future__ import annotations

import hmac
import json
import mimetypes
import os
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from .auth import tenant_for
from .callbacks import Dispatcher
from .contract import spec_bytes
from .errors import ApiError, BadRequest
from .lifecycle import Lifecycle
from .responses import json_response
from .serialize import prompt_json
from .services import Services
from .store import Row, Store
from .violations import violation_json

# A valid, empty safetensors file: an 8-byte header length and an empty JSON header.
EMPTY_SAFETENSORS = struct.pack("<Q", 2) + b"{}"
MAX_WAIT = 60.0
Endpoint = Callable[[Request], Awaitable[Response]]
Scoped = Callable[[Request, str | None], Awaitable[Response]]
IMMUTABLE = {"Cache-Control": "public, max-age=31536000, immutable"}


def callback_json(row: Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "entity": row["entity"],
        "entity_id": row["entity_id"],
        "url": row["url"],
        "status": row["status"],
        "attempts": row["attempts"],
        "interrupted": row["interrupted"],
        "status_code": row["status_code"],
        "latency_ms": row["latency_ms"],
        "error": row["error"],
        "created_at": row["created_at"],
        "finished_at": row["finished_at"],
        "body": json.loads(row["body"]),
    }


def _callback_filters(request: Request) -> tuple[dict[str, Any], float, int]:
    query = request.query_params
    filters: dict[str, Any] = {}
    if "entity" in query:
        filters["entity"] = query["entity"]
    if "status" in query:
        filters["status"] = query["status"]
    try:
        if "entity_id" in query:
            filters["entity_id"] = int(query["entity_id"])
        wait = min(float(query.get("wait", 0)), MAX_WAIT)
        count = int(query.get("count", 1))
    except ValueError:
        raise BadRequest("entity_id and count are integers, wait is seconds") from None
    return filters, wait, count


def scoped(handler: Scoped, allowed: frozenset[str]) -> Endpoint:
    """Admin calls see one tenant when they send its key, every tenant when they send none."""

    async def endpoint(request: Request) -> Response:
        header = request.headers.get("authorization")
        try:
            return await handler(request, tenant_for(header, allowed) if header else None)
        except ApiError as error:
            return json_response(error.status, error.body)

    return endpoint


def violation_routes(store: Store, allowed: frozenset[str]) -> list[BaseRoute]:
    """``GET``/``DELETE /_mock/violations``: the mock's and the proxy's violation log."""

    async def list_violations(_request: Request, tenant: str | None) -> Response:
        with store.begin() as tx:
            rows = tx.list_violations(tenant)
        return json_response(200, {"violations": [violation_json(row) for row in rows]})

    async def clear_violations(_request: Request, tenant: str | None) -> Response:
        with store.begin() as tx:
            tx.clear_violations(tenant)
        return json_response(200, {"message": "Violation log cleared"})

    return [
        Route("/_mock/violations", scoped(list_violations, allowed), methods=["GET"]),
        Route("/_mock/violations", scoped(clear_violations, allowed), methods=["DELETE"]),
    ]


def routes(services: Services, lifecycle: Lifecycle, dispatcher: Dispatcher) -> list[BaseRoute]:
    spec = spec_bytes()

    async def health(_request: Request) -> Response:
        # The process id tells replicas (--workers) apart behind one address.
        return json_response(200, {"status": "ok", "pid": os.getpid()})

    async def openapi(_request: Request) -> Response:
        return Response(spec, media_type="application/yaml")

    async def file(request: Request) -> Response:
        key: str = request.path_params["key"]
        if key.endswith("/model.safetensors"):
            return Response(EMPTY_SAFETENSORS, media_type="application/octet-stream")
        data = services.files.get(key)
        if data is None:
            return json_response(404, {"error": "Not found"})
        media_type = mimetypes.guess_type(key)[0] or "application/octet-stream"
        return Response(data, media_type=media_type, headers=IMMUTABLE)

    async def complete_prompt(request: Request) -> Response:
        prompt_id: int = request.path_params["id"]
        with services.store.begin() as tx:
            prompt = tx.prompt_by_id(prompt_id)
        if prompt is None:
            return json_response(404, {"error": f"Prompt {prompt_id} not found"})
        lifecycle.finish_training(prompt["tune_id"])
        await lifecycle.complete(prompt_id)
        with services.store.begin() as tx:
            done = tx.prompt_by_id(prompt_id)
        assert done is not None
        return json_response(200, prompt_json(done, services.settings.base_url))

    async def list_callbacks(request: Request, tenant: str | None) -> Response:
        """The delivery log; ``wait=S`` blocks until ``count`` matching deliveries finished."""
        filters, wait, count = _callback_filters(request)
        deadline = time.monotonic() + wait
        while True:
            with services.store.begin() as tx:
                rows = tx.list_callbacks(tenant, filters)
            finished = [row for row in rows if row["status"] != "pending"]
            left = deadline - time.monotonic()
            if len(finished) >= count or left <= 0:
                timed_out = wait > 0 and left <= 0
                log = [callback_json(row) for row in rows]
                return json_response(200, {"callbacks": log, "timed_out": timed_out})
            await dispatcher.wait_for_change(min(left, 0.5))

    async def clear_callbacks(_request: Request, tenant: str | None) -> Response:
        with services.store.begin() as tx:
            tx.clear_callbacks(tenant)
        return json_response(200, {"message": "Callback log cleared"})

    allowed = frozenset(services.settings.api_keys)
    return [
        Route("/_mock/health", health, methods=["GET"]),
        Route("/_mock/callbacks", scoped(list_callbacks, allowed), methods=["GET"]),
        Route("/_mock/callbacks", scoped(clear_callbacks, allowed), methods=["DELETE"]),
        *violation_routes(services.store, allowed),
        Route("/openapi.yaml", openapi, methods=["GET"]),
        Route("/_mock/files/{key:path}", file, methods=["GET"]),
        Route("/_mock/prompts/{id:int}/complete", complete_prompt, methods=["POST"]),
    ]


class AdminGuard:
    """With ``--admin-token``, every ``/_mock/`` route but health and files needs the
    ``X-Admin-Token`` header, so a shared sandbox's controls are not open to all. The
    dashboard page checks the token itself, so that it can also take ``?token=`` and
    tell a person what is missing."""

    OPEN = ("/_mock/health", "/_mock/files/")
    SELF_CHECKED = "/_mock/"
    HEADER = b"x-admin-token"

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        guarded = (
            scope["type"] == "http"
            and path.startswith("/_mock/")
            and not path.startswith(self.OPEN)
            and path != self.SELF_CHECKED
        )
        if guarded:
            given = dict(scope["headers"]).get(self.HEADER, b"")
            if not hmac.compare_digest(given, self.token):
                message = "this sandbox's /_mock/ routes need the X-Admin-Token header"
                await json_response(401, {"error": message})(scope, receive, send)
                return
        await self.app(scope, receive, send)
