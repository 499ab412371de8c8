"""JSON answers, the same way everywhere (API, admin routes, errors)."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from .errors import ApiError
from .jsontext import dumps

JSON_TYPE = "application/json; charset=utf-8"
_JSON_TYPE = JSON_TYPE.encode("latin-1")
NO_BODY: Any = object()
"""A handler's body for answers without one (a like's 201)."""


class JsonResponse(Response):
    """Encoded JSON, with the headers Starlette's ``Response`` gives it (``content-length``
    unless the status has no body, then ``content-type``), set without its generic path."""

    media_type = JSON_TYPE

    def __init__(self, body: bytes, status_code: int = 200) -> None:
        self.status_code = status_code
        self.background = None
        self.body = body
        content_type = (b"content-type", _JSON_TYPE)
        if status_code < 200 or status_code in (204, 304):
            self.raw_headers = [content_type]
        else:
            self.raw_headers = [(b"content-length", str(len(body)).encode("latin-1")), content_type]


def json_response(status: int, body: Any) -> Response:
    """``body`` as JSON; bytes are JSON encoded already."""
    if body is NO_BODY:
        return Response(status_code=status)
    return JsonResponse(body if isinstance(body, bytes) else dumps(body), status)


def error_response(error: ApiError) -> Response:
    response = json_response(error.status, error.body)
    response.headers.update(error.headers)
    return response
