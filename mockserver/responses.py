"""JSON answers, the same way everywhere (API, admin routes, errors)."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from .errors import ApiError
from .serialize import dumps

JSON_TYPE = "application/json; charset=utf-8"
NO_BODY: Any = object()
"""A handler's body for answers without one (a like's 201)."""


def json_response(status: int, body: Any) -> Response:
    if body is NO_BODY:
        return Response(status_code=status)
    return Response(dumps(body), status_code=status, media_type=JSON_TYPE)


def error_response(error: ApiError) -> Response:
    response = json_response(error.status, error.body)
    response.headers.update(error.headers)
    return response
