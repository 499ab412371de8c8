"""A validating reverse proxy: forward to an upstream Astria API, check both directions.

For teams that test against the real API (or a staging copy): point the client at the
proxy, and every request and every answer is checked against the contract. Violations
are logged per tenant (by bearer key) at ``/_mock/violations``, as the mock logs them;
traffic is forwarded unchanged either way.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mockserver.admin import violation_routes
from mockserver.clock import Clock
from mockserver.contract import Contract, Violation
from mockserver.settings import DEFAULT_MAX_BODY_BYTES
from mockserver.store import Store
from mockserver.validation import check_request
from mockserver.violations import record

METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
# Hop-by-hop headers and those httpx sets itself are not forwarded.
DROPPED_HEADERS = frozenset(
    {"host", "content-length", "connection", "keep-alive", "transfer-encoding", "upgrade",
     "proxy-authorization", "te", "trailer", "content-encoding"}
)  # fmt: skip


def _tenant(request: Request) -> str | None:
    """The same tenant id the mock derives from a key, without judging the key."""
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        return None
    return hashlib.sha256(key.strip().encode()).hexdigest()[:32]


def create_proxy(
    upstream: str,
    *,
    timeout: float = 60.0,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    database_url: str = "sqlite://",
) -> Starlette:
    contract = Contract.load()
    clock = Clock()
    store = Store(database_url, clock.stamp)
    client = httpx.AsyncClient(base_url=upstream.rstrip("/"), timeout=timeout, trust_env=False)

    async def forward(request: Request) -> Response:
        raw = await request.body()
        tenant = _tenant(request)
        found = contract.match(request.method, request.url.path)
        summary: dict[str, Any] = {"method": request.method, "path": request.url.path}
        if found is None:
            violation = Violation("operation", "is not an operation of the contract", "Path")
            record(store, clock, tenant, "-", [violation], summary)
            operation = None
        else:
            operation = found[0]
            checked = await check_request(request, operation, max_body_bytes)
            summary = checked.summary(request)
            record(store, clock, tenant, operation.operation_id, checked.violations, summary)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in DROPPED_HEADERS}
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        try:
            answer = await client.request(request.method, target, headers=headers, content=raw)
        except httpx.HTTPError as exc:
            body = {"error": f"upstream {upstream} unreachable: {type(exc).__name__}"}
            return Response(json.dumps(body), status_code=502, media_type="application/json")
        if operation is not None:
            problems = _response_violations(operation.check_response, answer)
            record(store, clock, tenant, operation.operation_id, problems, summary, "response")
        kept = {k: v for k, v in answer.headers.items() if k.lower() not in DROPPED_HEADERS}
        return Response(answer.content, status_code=answer.status_code, headers=kept)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        async with client:
            yield
        store.close()

    routes = [
        *violation_routes(store, frozenset()),
        Route("/{path:path}", forward, methods=METHODS),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def _response_violations(
    check: Callable[[int, Any], list[str]], answer: httpx.Response
) -> list[Violation]:
    """How an upstream answer breaks the contract (status not documented, body off-schema)."""
    body: Any = None
    if answer.content:
        try:
            body = answer.json()
        except ValueError:
            return [Violation("response", "is not JSON", "Body")]
    return [
        Violation("response", problem, "Response") for problem in check(answer.status_code, body)
    ]
