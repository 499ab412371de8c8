"""The contract violations a server saw, per tenant: what a client's tests assert on."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .clock import Clock, iso
from .contract import Violation
from .store import Row, Store

UNKNOWN_TENANT = "-"


def record(
    store: Store,
    clock: Clock,
    tenant: str | None,
    operation_id: str,
    found: Iterable[Violation],
    request: dict[str, Any],
    source: str = "request",
) -> None:
    """Log each violation of one request (or of the response to it)."""
    found = list(found)
    if not found:
        return
    with store.begin() as tx:
        for violation in found:
            tx.insert_violation(
                {
                    "id": tx.next_id("violations"),
                    "tenant": tenant or UNKNOWN_TENANT,
                    "operation_id": operation_id,
                    "source": source,
                    "field": violation.field,
                    "message": violation.message,
                    "kind": violation.kind,
                    "request": request,
                    "created_at": iso(clock.now()),
                }
            )


def violation_json(row: Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "operation": row["operation_id"],
        "source": row["source"],
        "field": row["field"],
        "message": row["message"],
        "kind": row["kind"],
        "request": row["request"],
        "created_at": row["created_at"],
    }
