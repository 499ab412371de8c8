"""The errors the mock answers with, in the API's own shapes.

Every error a handler raises is an :class:`ApiError`; the app turns it into a JSON
response. Anything else that escapes a handler is a bug and answers a JSON 500.

* ApiError — base: an HTTP status and a JSON body.
    * BadRequest (400) — malformed body, bad paging (``{"error": "..."}``).
    * Unauthorized (401) — missing, malformed or unknown bearer key.
    * NotFound (404) — no such object, or not the caller's.
    * PayloadTooLarge (413) — body above the configured limit.
    * UnsupportedMediaType (415) — a body in a content type the operation does not take.
    * TooManyRequests (429) — rate limited; carries ``Retry-After``.
    * Unprocessable (422) — validation failed; body is the Rails field map
      ``{"field": ["message", ...]}``, rules about the whole object under ``base``.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error answered to the client with ``status`` and a JSON ``body``."""

    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.headers: dict[str, str] = {}

    @property
    def body(self) -> dict[str, Any]:
        return {"error": self.message}


class BadRequest(ApiError):
    status = 400


class Unauthorized(ApiError):
    status = 401


class NotFound(ApiError):
    status = 404

    def __init__(self, message: str = "Not found") -> None:
        super().__init__(message)


class PayloadTooLarge(ApiError):
    status = 413


class UnsupportedMediaType(ApiError):
    status = 415


class TooManyRequests(ApiError):
    """A 429 with ``Retry-After``, as the API answers clients that poll too fast."""

    status = 429

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.headers["Retry-After"] = str(retry_after)


class Unprocessable(ApiError):
    """A 422 whose body maps each offending field to its messages."""

    status = 422

    def __init__(self, fields: dict[str, list[str]]) -> None:
        super().__init__("; ".join(f"{k} {' '.join(v)}" for k, v in fields.items()))
        self.fields = fields

    @classmethod
    def on(cls, field: str, message: str) -> Unprocessable:
        return cls({field: [message]})

    @property
    def body(self) -> dict[str, Any]:
        return dict(self.fields)


FACEID_NOT_SUPPORTED = "model_type=faceid is not supported. Use a checkpoint instead"
