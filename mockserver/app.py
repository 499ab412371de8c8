"""The Starlette app: routes from the contract, the request chain, JSON errors.

HTTP → auth (bearer key → tenant) → body decoding → contract validation →
handler (domain rules, store) → serializer → response. Every failure answers
JSON in the API's own shape; nothing escapes as a 500 page.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import AsyncIterator

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from . import admin, dashboard, sandbox
from .api import HANDLERS, Api, Call
from .auth import tenant_for
from .contract import Contract, Operation
from .dispatch import Endpoint, MockApp
from .errors import ApiError, NotFound, TooManyRequests
from .faults import fault_response, load_faults
from .ratelimit import Rate, RateLimiter
from .reads import RecentReads
from .responses import error_response, json_response
from .runtime import build_runtime
from .seed import SeedError, load_seed
from .services import Services
from .settings import Settings
from .store import MAX_ID
from .validation import check_request
from .violations import record
from .wakeup import CoalescedWake

log = logging.getLogger("astria_mock")


def _starlette_path(template: str) -> str:
    """``/tunes/{id}.json`` → ``/tunes/{id:int}.json``: path ids are integers."""
    return re.sub(r"\{(\w+)\}", r"{\1:int}", template)


def _endpoint(api: Api, operation: Operation) -> Endpoint:
    """The request chain of one operation: auth, checks against the contract, the handler."""
    handler = HANDLERS[operation.operation_id]
    services = api.services
    settings, store, clock = services.settings, services.store, services.clock
    allowed_keys = frozenset(settings.api_keys)
    limit, strict = settings.max_body_bytes, settings.strict
    faults, limiter = services.faults, services.limiter
    # Without a body or a query string there is nothing to decode or check: the query
    # is the contract's defaults.
    default_query, _ = operation.parse_query({})
    has_body = bool(operation.media_types)

    async def answer(scope: Scope, receive: Receive) -> Response:
        tenant = tenant_for(_header(scope, b"authorization"), allowed_keys)
        wait = limiter.take(tenant) if limiter is not None else None
        if wait is not None:
            raise TooManyRequests(f"rate limit of {settings.rate_limit} exceeded", wait)
        if has_body or scope["query_string"]:
            request = Request(scope, receive)
            checked = await check_request(request, operation, limit, strict=strict)
            if checked.violations:
                summary = checked.summary(request)
                record(store, clock, tenant, operation.operation_id, checked.violations, summary)
            if checked.error is not None:
                raise checked.error
            query, body = checked.query, checked.body
        else:
            query, body = dict(default_query), {}
        fault = faults.pick(tenant, scope["method"], _path(scope), body) if faults.active else None
        if fault is not None:
            await anyio.sleep(fault.delay)
            if fault.status is not None and fault.status != 504:
                return fault_response(fault)
        status, result = await handler(api, Call(tenant, _path_ids(scope), query, body))
        if fault is not None and (fault.status or fault.drop or fault.truncate):
            # A 504 or a broken connection after the work was done, as in production.
            return fault_response(fault, json_response(status, result))
        return json_response(status, result)

    async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            response = await answer(scope, receive)
        except ApiError as error:
            response = error_response(error)
        except Exception:
            log.exception("%s %s failed", scope["method"], _path(scope))
            response = json_response(500, {"error": "Internal server error"})
        await response(scope, receive, send)

    return endpoint


def _header(scope: Scope, name: bytes) -> str | None:
    """A request header by its lower-case name (ASGI servers send them lower-cased)."""
    for key, value in scope["headers"]:
        if key == name:
            decoded: str = value.decode("latin-1")
            return decoded
    return None


def _path(scope: Scope) -> str:
    """The path as ``request.url.path`` gives it."""
    return f"{scope.get('root_path', '')}{scope['path']}"


def _path_ids(scope: Scope) -> dict[str, int]:
    """The path's ids; one outside the contract's 64-bit range names nothing (404)."""
    params: dict[str, int] = scope["path_params"]
    for value in params.values():
        if not 0 < value <= MAX_ID:
            raise NotFound(f"No object has id {value}")
    return dict(params)


def api_operations(api: Api, contract: Contract) -> dict[str, dict[str, Endpoint]]:
    """The endpoint of each operation of the contract, by path template and method."""
    by_path: dict[str, dict[str, Endpoint]] = {}
    for operation in contract.operations.values():
        endpoint = _endpoint(api, operation)
        by_path.setdefault(operation.path, {})[operation.method] = endpoint
    return by_path


def api_routes(operations: dict[str, dict[str, Endpoint]]) -> list[BaseRoute]:
    """One route per path of the contract, dispatching on the method (a 405 lists them all)."""
    return [
        Route(_starlette_path(path), _ByMethod(endpoints), methods=list(endpoints))
        for path, endpoints in operations.items()
    ]


class _ByMethod:
    """The endpoints of one path, by method, as one ASGI app (a route's endpoint)."""

    def __init__(self, endpoints: dict[str, Endpoint]) -> None:
        self.endpoints = endpoints

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = "GET" if scope["method"] == "HEAD" else scope["method"]
        await self.endpoints[method](scope, receive, send)


async def _http_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    messages = {404: "Not found", 405: "Method not allowed"}
    message = messages.get(exc.status_code, str(exc.detail))
    response = json_response(exc.status_code, {"error": message})
    response.headers.update(exc.headers or {})  # the 405's Allow header
    return response


async def _server_error(_request: Request, _exc: Exception) -> Response:
    return json_response(500, {"error": "Internal server error"})


def create_app(settings: Settings | None = None) -> Starlette:
    """The whole mock as one ASGI app, on an in-memory or on-disk store."""
    settings = settings or Settings()
    contract = Contract.load()
    runtime = build_runtime(settings)
    store, lifecycle = runtime.store, runtime.lifecycle
    services = Services(
        settings=settings,
        contract=contract,
        store=store,
        files=runtime.files,
        clock=runtime.clock,
        outbox=runtime.outbox,
        faults=load_faults(settings),
        limiter=RateLimiter(Rate.parse(settings.rate_limit)) if settings.rate_limit else None,
        wake=CoalescedWake(runtime.wake),
        reads=RecentReads(store),
        upload_thread=anyio.CapacityLimiter(1),
    )
    api = Api(services, lifecycle.complete)
    operations = api_operations(api, contract)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        if settings.seed_file is not None:
            try:
                made = await load_seed(services, settings.seed_file, lifecycle.complete)
            except SeedError as error:
                log.error("cannot start: %s", error)
                raise
            log.info("seeded %d tunes from %s", made, settings.seed_file)
        async with anyio.create_task_group() as group:
            group.start_soon(runtime.run, settings.generate)
            try:
                yield
            finally:
                group.cancel_scope.cancel()
        store.close()

    routes = [
        *admin.routes(services, lifecycle, runtime.dispatcher),
        *sandbox.routes(services),
        *dashboard.routes(services),
        *api_routes(operations),
    ]
    middleware = []
    if settings.admin_token:
        middleware.append(Middleware(admin.AdminGuard, token=settings.admin_token))
    app = MockApp(
        operations,
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error, Exception: _server_error},
    )
    app.state.services = services
    app.state.lifecycle = lifecycle
    return app
