"""A request checked against its operation: decoded, coerced, validated.

Shared by the mock and the validating proxy. Every way the request breaks the
contract becomes a :class:`Violation`; ``error`` is what the mock answers:
a 400 for bad paging or a malformed body, a 413/415, a 422 for a body off the
contract (unknown fields only with ``strict``), or None when it is served.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request

from .bodies import decode_body, for_validation
from .contract import Operation, Violation, violations_to_error
from .errors import ApiError, BadRequest

MAX_RECORDED_BODY = 16_384
_NO_QUERY: dict[str, str] = {}


@dataclass(slots=True)
class CheckedRequest:
    query: dict[str, Any] = field(default_factory=dict)
    body: dict[str, Any] = field(default_factory=dict)
    violations: list[Violation] = field(default_factory=list)
    error: ApiError | None = None
    media_type: str | None = None

    def summary(self, request: Request) -> dict[str, Any]:
        """The request as the violation log shows it (files by name, long bodies cut)."""
        text = json.dumps(for_validation(self.body), ensure_ascii=False, default=str)
        body: Any = for_validation(self.body)
        if len(text) > MAX_RECORDED_BODY:
            body = text[:MAX_RECORDED_BODY] + "…"
        return {
            "method": request.method,
            "path": request.url.path,
            "query": request.url.query,
            "content_type": self.media_type,
            "body": body,
        }


async def check_request(
    request: Request, operation: Operation, limit: int, *, strict: bool = False
) -> CheckedRequest:
    checked = CheckedRequest()
    query = request.query_params if request.scope.get("query_string") else _NO_QUERY
    checked.query, query_violations = operation.parse_query(query)
    if query_violations:
        checked.violations.extend(query_violations)
        first = query_violations[0]
        checked.error = BadRequest(f"{first.field} {first.message}")
        return checked
    if not operation.media_types:
        return checked
    try:
        decoded = await decode_body(request, operation.media_types, limit)
    except ApiError as error:
        checked.violations.append(Violation("body", error.message, type(error).__name__))
        checked.error = error
        return checked
    checked.media_type = decoded.media_type
    body = decoded.values
    checked.body = operation.coerce_form(body) if decoded.from_form else body
    instance = for_validation(checked.body) if decoded.from_form else checked.body  # files
    try:
        checked.violations.extend(operation.check_body(instance))
    except BadRequest as error:
        checked.violations.append(Violation("body", error.message, "BadRequest"))
        checked.error = error
        return checked
    checked.error = violations_to_error(checked.violations, strict)
    return checked
