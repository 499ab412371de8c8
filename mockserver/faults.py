"""Injected faults: rules that make the API misbehave on purpose, for sandboxes.

A rule matches by method, path pattern (``*`` is one path segment, ``**`` any
rest) and optionally body fields (dotted paths, e.g. ``{"prompt.num_images": 4}``),
for one tenant or for all. It acts by a status (429 with ``Retry-After``, 500, 503,
504), added latency (fixed or a ``[min, max]`` range), a dropped connection or a
truncated body; and fires always, ``times`` times, or with a ``probability`` drawn
from a seeded generator, so a run can be replayed. A 504 behaves like the real
one: the request is carried out and the object created, only the answer is lost.
"""

from __future__ import annotations

import json
import random
import re
import threading
from dataclasses import dataclass, field
from typing import Any

import yaml
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from .auth import tenant_for
from .errors import BadRequest
from .settings import Settings

STATUSES = (429, 500, 503, 504)
RULE_FIELDS = frozenset(
    {"method", "path", "body", "status", "retry_after", "latency_ms", "drop", "truncate",
     "times", "probability"}
)  # fmt: skip
MESSAGES = {
    429: "Too many requests: slow down, or use callbacks instead of polling",
    500: "Internal server error (injected fault)",
    503: "Service unavailable (injected fault)",
    504: "Gateway timeout: the request took over 30 s; it was probably carried out",
}


@dataclass(slots=True)
class Rule:
    id: int
    tenant: str | None
    path: str
    method: str | None = None
    body: dict[str, Any] = field(default_factory=dict)
    status: int | None = None
    retry_after: int = 1
    latency_ms: tuple[int, int] | None = None
    drop: bool = False
    truncate: bool = False
    times: int | None = None
    probability: float | None = None
    fired: int = 0
    pattern: re.Pattern[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        parts = re.split(r"(\*\*|\*)", self.path)
        regex = "".join(
            ".*" if part == "**" else "[^/]+" if part == "*" else re.escape(part) for part in parts
        )
        self.pattern = re.compile(f"^{regex}$")

    def matches(self, tenant: str | None, method: str, path: str, body: dict[str, Any]) -> bool:
        if self.tenant is not None and self.tenant != tenant:
            return False
        if self.method is not None and self.method != method:
            return False
        if self.times is not None and self.fired >= self.times:
            return False
        if not self.pattern.match(path):
            return False
        return all(_lookup(body, name) == value for name, value in self.body.items())

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "scope": "tenant" if self.tenant else "global",
            "method": self.method,
            "path": self.path,
            "body": self.body,
            "status": self.status,
            "retry_after": self.retry_after if self.status == 429 else None,
            "latency_ms": list(self.latency_ms) if self.latency_ms else None,
            "drop": self.drop,
            "truncate": self.truncate,
            "times": self.times,
            "probability": self.probability,
            "fired": self.fired,
        }


@dataclass(frozen=True, slots=True)
class Fault:
    """What one request gets: wait, then maybe a status, a drop or a truncated body."""

    rule_id: int
    delay: float
    status: int | None
    retry_after: int
    drop: bool
    truncate: bool


def _lookup(body: dict[str, Any], dotted: str) -> Any:
    node: Any = body
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


_MISSING = object()


def parse_rule(data: Any, rule_id: int, tenant: str | None) -> Rule:
    """A rule from its JSON form, or a 400 that says what is wrong with it."""
    if not isinstance(data, dict):
        raise BadRequest("a fault rule is a JSON object")
    unknown = set(data) - RULE_FIELDS
    if unknown:
        raise BadRequest(f"unknown fault rule fields: {', '.join(sorted(unknown))}")
    path = data.get("path")
    if not isinstance(path, str) or not path.startswith("/"):
        raise BadRequest("path is required and starts with /, e.g. /tunes/*/prompts")
    method = data.get("method")
    if method is not None and (not isinstance(method, str) or not method.isalpha()):
        raise BadRequest("method is an HTTP method such as GET or POST")
    status = data.get("status")
    if status is not None and status not in STATUSES:
        raise BadRequest(f"status must be one of {', '.join(map(str, STATUSES))}")
    latency = data.get("latency_ms")
    if isinstance(latency, int | float) and not isinstance(latency, bool) and latency >= 0:
        latency = (int(latency), int(latency))
    elif (
        isinstance(latency, list)
        and len(latency) == 2
        and all(isinstance(v, int | float) and v >= 0 for v in latency)
        and latency[0] <= latency[1]
    ):
        latency = (int(latency[0]), int(latency[1]))
    elif latency is not None:
        raise BadRequest("latency_ms is milliseconds, or a [min, max] range")
    body = data.get("body", {})
    if not isinstance(body, dict):
        raise BadRequest('body is an object of dotted fields, e.g. {"prompt.num_images": 4}')
    times = data.get("times")
    if times is not None and (not isinstance(times, int) or isinstance(times, bool) or times < 1):
        raise BadRequest("times is a positive integer")
    probability = data.get("probability")
    if probability is not None and not (
        isinstance(probability, int | float) and 0 <= probability <= 1
    ):
        raise BadRequest("probability is a number from 0 to 1")
    retry_after = data.get("retry_after", 1)
    if not isinstance(retry_after, int) or isinstance(retry_after, bool) or retry_after < 0:
        raise BadRequest("retry_after is whole seconds")
    drop, truncate = bool(data.get("drop", False)), bool(data.get("truncate", False))
    if status is None and latency is None and not drop and not truncate:
        raise BadRequest("a rule needs an action: status, latency_ms, drop or truncate")
    return Rule(
        id=rule_id,
        tenant=tenant,
        path=path,
        method=method.upper() if method else None,
        body=body,
        status=status,
        retry_after=retry_after,
        latency_ms=latency,
        drop=drop,
        truncate=truncate,
        times=times,
        probability=probability,
    )


class Faults:
    """The active rules; the first rule that matches a request decides its fault."""

    def __init__(self, seed: int = 0) -> None:
        self._rules: list[Rule] = []
        self._random = random.Random(seed)
        self._next_id = 1
        self._lock = threading.Lock()

    def add(self, data: Any, tenant: str | None) -> Rule:
        with self._lock:
            rule = parse_rule(data, self._next_id, tenant)
            self._next_id += 1
            self._rules.append(rule)
            return rule

    @property
    def active(self) -> bool:
        """Whether any rule is set: without one, a request need not be matched at all."""
        return bool(self._rules)

    def rules(self, tenant: str | None) -> list[Rule]:
        return [r for r in self._rules if tenant is None or r.tenant in (None, tenant)]

    def remove(self, rule_id: int, tenant: str | None) -> bool:
        with self._lock:
            for rule in self._rules:
                if rule.id == rule_id and (tenant is None or rule.tenant == tenant):
                    self._rules.remove(rule)
                    return True
        return False

    def clear(self, tenant: str | None) -> None:
        with self._lock:
            self._rules = [r for r in self._rules if tenant is not None and r.tenant != tenant]

    def pick(
        self, tenant: str | None, method: str, path: str, body: dict[str, Any]
    ) -> Fault | None:
        with self._lock:
            for rule in self._rules:
                if not rule.matches(tenant, method, path, body):
                    continue
                if rule.probability is not None and self._random.random() >= rule.probability:
                    continue
                rule.fired += 1
                delay = 0.0
                if rule.latency_ms is not None:
                    low, high = rule.latency_ms
                    delay = self._random.uniform(low, high) / 1000
                return Fault(
                    rule.id, delay, rule.status, rule.retry_after, rule.drop, rule.truncate
                )
        return None


class BrokenResponse(Response):
    """Announces the whole body, sends part of it (or none), then drops the connection."""

    def __init__(self, whole: Response, keep: int) -> None:
        super().__init__(whole.body, whole.status_code, dict(whole.headers))
        self.keep = keep

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        body = bytes(self.body)[: self.keep]
        await send({"type": "http.response.body", "body": body, "more_body": True})
        raise ConnectionAbortedError("injected fault: connection dropped")


def fault_response(fault: Fault, done: Response | None = None) -> Response:
    """The answer a fault gives; ``done`` is the real answer when the work was carried out."""
    if fault.status is not None:
        body = json.dumps({"error": MESSAGES[fault.status]}).encode()
        response = Response(body, fault.status, media_type="application/json; charset=utf-8")
        if fault.status == 429:
            response.headers["Retry-After"] = str(fault.retry_after)
    else:
        assert done is not None
        response = done
    if fault.drop or fault.truncate:
        return BrokenResponse(response, len(response.body) // 2 if fault.truncate else 0)
    return response


def load_faults(settings: Settings) -> Faults:
    """The rules of ``--scenario FILE`` (YAML: ``faults: [rule, ...]``; a rule may name
    the ``api_key`` whose tenant it is for), seeded by ``--fault-seed``."""
    faults = Faults(settings.fault_seed)
    if settings.scenario is None:
        return faults
    document = yaml.safe_load(settings.scenario.read_text("utf-8")) or {}
    rules = document.get("faults", []) if isinstance(document, dict) else None
    if not isinstance(rules, list):
        raise ValueError(f"{settings.scenario}: expected a mapping with a 'faults' list")
    for index, raw in enumerate(rules):
        rule = dict(raw) if isinstance(raw, dict) else raw
        key = rule.pop("api_key", None) if isinstance(rule, dict) else None
        tenant = tenant_for(f"Bearer {key}", frozenset()) if key else None
        try:
            faults.add(rule, tenant)
        except BadRequest as exc:
            raise ValueError(f"{settings.scenario}: fault {index}: {exc.message}") from None
    return faults
