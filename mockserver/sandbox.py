"""Sandbox controls under ``/_mock/``: fault rules, the clock, reset."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from .admin import scoped
from .errors import BadRequest, NotFound
from .responses import json_response
from .services import Services


async def _json_body(request: Request) -> Any:
    try:
        return json.loads(await request.body() or b"{}")
    except ValueError:
        raise BadRequest("the body must be JSON") from None


def routes(services: Services) -> list[BaseRoute]:
    faults, store, clock = services.faults, services.store, services.clock
    allowed = frozenset(services.settings.api_keys)

    async def list_faults(_request: Request, tenant: str | None) -> Response:
        return json_response(200, {"faults": [rule.as_json() for rule in faults.rules(tenant)]})

    async def add_fault(request: Request, tenant: str | None) -> Response:
        """With a bearer key the rule is for that tenant; without one, for everyone."""
        rule = faults.add(await _json_body(request), tenant)
        return json_response(201, rule.as_json())

    async def clear_faults(_request: Request, tenant: str | None) -> Response:
        faults.clear(tenant)
        return json_response(200, {"message": "Fault rules removed"})

    async def remove_fault(request: Request, tenant: str | None) -> Response:
        rule_id: int = request.path_params["id"]
        if not faults.remove(rule_id, tenant):
            raise NotFound(f"Fault rule {rule_id} not found")
        return json_response(200, {"message": f"Fault rule {rule_id} removed"})

    async def get_clock(_request: Request) -> Response:
        return json_response(200, {"now": clock.stamp(), "frozen": clock.frozen})

    async def advance_clock(request: Request, _tenant: str | None) -> Response:
        """``{"advance_seconds": N}``: the API clock moves on, and so does pending work."""
        body = await _json_body(request)
        seconds = body.get("advance_seconds") if isinstance(body, dict) else None
        if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds < 0:
            raise BadRequest('send {"advance_seconds": N} with N ≥ 0')
        clock.advance(timedelta(seconds=seconds))
        with store.begin() as tx:
            tx.bring_forward(float(seconds))
        services.wake(None)
        return json_response(200, {"now": clock.stamp(), "frozen": clock.frozen})

    async def reset(_request: Request, tenant: str | None) -> Response:
        """Forget one tenant (with its key) or everything (without one); the gallery stays."""
        with store.begin() as tx:
            prefixes = tx.reset(tenant)
        for prefix in prefixes:
            await anyio.to_thread.run_sync(services.files.delete_prefix, prefix)
        faults.clear(tenant)
        return json_response(200, {"message": "Reset done"})

    return [
        Route("/_mock/faults", scoped(list_faults, allowed), methods=["GET"]),
        Route("/_mock/faults", scoped(add_fault, allowed), methods=["POST"]),
        Route("/_mock/faults", scoped(clear_faults, allowed), methods=["DELETE"]),
        Route("/_mock/faults/{id:int}", scoped(remove_fault, allowed), methods=["DELETE"]),
        Route("/_mock/clock", get_clock, methods=["GET"]),
        Route("/_mock/clock", scoped(advance_clock, allowed), methods=["POST"]),
        Route("/_mock/reset", scoped(reset, allowed), methods=["POST"]),
    ]
