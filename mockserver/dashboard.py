"""The sandbox dashboard at ``GET /_mock/``, for people running a shared sandbox.

It shows each tenant's tunes and prompts (with image thumbnails and their status:
pending, done, failed), the callback delivery log, the contract violations and the
active fault rules, which it can add and remove. Tenants are shown by their tenant
id, the digest of their key (keys are never stored).

Server-rendered: every panel is HTML made here, everything user-supplied escaped
with :func:`html.escape`, under a Content-Security-Policy that runs only the page's
own script. The script (``dashboard/dashboard.js``, inlined with the CSS, so the
page needs nothing else and nothing from the network) polls ``GET /_mock/panels``
and swaps in the panels that changed, so prompts finishing show up without a
reload. ``GET /_mock/state`` gives the same state as JSON in the API's shapes.

With ``--admin-token`` the page takes the token as ``?token=`` (or the
``X-Admin-Token`` header); its script keeps it in ``sessionStorage`` for the tab,
drops it from the address bar and sends it as ``X-Admin-Token`` on every call.
Without it the page says so and asks for it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from html import escape
from importlib import resources
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from .admin import callback_json, scoped
from .errors import BadRequest
from .gallery import GALLERY_TUNES
from .jsontext import dumps
from .responses import json_response
from .serialize import prompt_json, tune_json
from .services import Services
from .store import Row
from .violations import violation_json

PAGE_PATH = "/_mock/"
"""The page; it checks the admin token itself (header or ``?token=``)."""
TOKEN_HEADER = "x-admin-token"
TOKEN_PARAM = "token"
TUNE_LIMIT = 100
PROMPT_LIMIT = 200
LOG_LIMIT = 50
MAX_LIMIT = 1000
POLL_MS = 1000
MIN_POLL_MS = 100
HUES = 8
FILES = "/_mock/files/"
SLOT = re.compile(r"\{\{([\w-]+)\}\}")


@dataclass(slots=True)
class Tenant:
    tunes: list[Row] = field(default_factory=list)
    prompts: list[Row] = field(default_factory=list)

    def last_change(self) -> str:
        return max((row["updated_at"] for row in [*self.tunes, *self.prompts]), default="")


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the dashboard shows: recent rows of every tenant (or one), the logs, the rules."""

    now: str
    tenants: dict[str, Tenant]
    callbacks: list[Row]
    violations: list[Row]
    faults: list[dict[str, Any]]


def snapshot(services: Services, tenant: str | None, limit: int | None = None) -> Snapshot:
    """The most recent tunes and prompts, grouped by tenant, most recently active first."""
    with services.store.begin() as tx:
        tunes = tx.recent_tunes(tenant, limit or TUNE_LIMIT)
        prompts = tx.recent_prompts(tenant, limit or PROMPT_LIMIT)
        callbacks = tx.recent_callbacks(tenant, limit or LOG_LIMIT)
        violations = tx.recent_violations(tenant, limit or LOG_LIMIT)
        now = tx.now
    grouped: dict[str, Tenant] = {}
    for row in tunes:
        grouped.setdefault(row["tenant"], Tenant()).tunes.append(row)
    for row in prompts:
        grouped.setdefault(row["tenant"], Tenant()).prompts.append(row)
    order = sorted(grouped, key=lambda t: (grouped[t].last_change(), t), reverse=True)
    return Snapshot(
        now=now,
        tenants={name: grouped[name] for name in order},
        callbacks=callbacks,
        violations=violations,
        faults=[rule.as_json() for rule in services.faults.rules(tenant)],
    )


def state_json(shot: Snapshot, base_url: str) -> dict[str, Any]:
    """The snapshot in the API's shapes (``GET /_mock/state``)."""
    return {
        "now": shot.now,
        "tenants": {
            name: {
                "tunes": [tune_json(row, base_url) for row in tenant.tunes],
                "prompts": [prompt_json(row, base_url) for row in tenant.prompts],
            }
            for name, tenant in shot.tenants.items()
        },
        "faults": shot.faults,
        "callbacks": [callback_json(row) for row in shot.callbacks],
        "violations": [violation_json(row) for row in shot.violations],
    }


# status ------------------------------------------------------------------
def tune_status(row: Row, now: str) -> str:
    if row["trained_at"] is None:
        return "pending"
    expires = row["expires_at"]
    if expires is not None and expires <= now and not row["auto_extend"]:
        return "expired"
    return "done"


def prompt_status(row: Row) -> str:
    if row["user_error"]:
        return "failed"
    return "done" if row["trained_at"] is not None else "pending"


# rendering ---------------------------------------------------------------
def e(value: Any) -> str:
    """Text for HTML, quotes included (every value goes through here)."""
    return escape("" if value is None else str(value), quote=True)


def _when(stamp: str | None) -> str:
    if not stamp:
        return ""
    short = stamp.replace("T", " ")[:19]
    return f'<time datetime="{e(stamp)}" title="{e(stamp)}">{e(short)}</time>'


def _badge(status: str) -> str:
    return f'<span class="badge {e(status)}">{e(status)}</span>'


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _hue(tenant: str) -> int:
    return int(hashlib.sha256(tenant.encode()).hexdigest()[:4], 16) % HUES


def _thumb(url: str | None, alt: str, css: str = "thumb") -> str:
    """An image of ours (relative ``/_mock/files/`` URL) as a linked thumbnail; a URL the
    client gave is shown as text, never fetched."""
    if not url:
        return ""
    if not url.startswith(FILES):
        return f'<span class="ext" title="{e(url)}">external image</span>'
    return (
        f'<a href="{e(url)}" target="_blank" rel="noopener">'
        f'<img class="{css}" src="{e(url)}" alt="{e(alt)}" loading="lazy" decoding="async"></a>'
    )


def _tune_html(row: Row, now: str) -> str:
    body = tune_json(row, "")  # relative URLs: the page works behind any host name
    faces = body["orig_images"][:1]
    face = _thumb(faces[0], f"tune {row['id']} image", "face") if faces else ""
    kind = " · ".join(e(v) for v in (body["model_type"] or "lora", body["name"], body["branch"]))
    return (
        f'<li class="tune" id="tune-{row["id"]}">{face or "<span class=face></span>"}'
        f'<div class="grow"><div><span class="id">#{row["id"]}</span> '
        f'<span class="title">{e(body["title"])}</span></div>'
        f'<div class="meta">{kind} · {_when(body["created_at"])}</div></div>'
        f"{_badge(tune_status(row, now))}</li>"
    )


def _prompt_html(row: Row, tune_titles: dict[int, str]) -> str:
    body = prompt_json(row, "")
    tune_id = row["tune_id"]
    title = tune_titles.get(tune_id)
    on = f"on {e(title)} #{tune_id}" if title else f"on tune #{tune_id}"
    status = prompt_status(row)
    if status == "done":
        images = "".join(
            _thumb(url, f"prompt {row['id']} image {index + 1}")
            for index, url in enumerate(body["images"])
        )
    elif status == "pending":
        images = '<span class="thumb waiting"></span>' * max(1, int(body["num_images"] or 1))
    else:
        images = f'<p class="error">{e(body["user_error"])}</p>'
    return (
        f'<li class="prompt" id="prompt-{row["id"]}" data-status="{status}">'
        f'<div class="row"><span class="id">#{row["id"]}</span>'
        f'<span class="meta grow">{on} · {_when(body["created_at"])}</span>{_badge(status)}</div>'
        f'<p class="text">{e(body["text"])}</p><div class="thumbs">{images}</div></li>'
    )


def tenants_html(shot: Snapshot) -> str:
    if not shot.tenants:
        return '<p class="empty">No tenants yet: any API request with a bearer key makes one.</p>'
    titles = {int(tune["id"]): str(tune["title"]) for tune in GALLERY_TUNES}
    cards = []
    for name, tenant in shot.tenants.items():
        tunes = "".join(_tune_html(row, shot.now) for row in tenant.tunes)
        own = {**titles, **{row["id"]: row["title"] for row in tenant.tunes}}
        prompts = "".join(_prompt_html(row, own) for row in tenant.prompts)
        counts = f"{_plural(len(tenant.tunes), 'tune')} · {_plural(len(tenant.prompts), 'prompt')}"
        cards.append(
            f'<article class="tenant" data-tenant="{e(name)}">'
            f'<h3><span class="dot hue-{_hue(name)}"></span>tenant'
            f'<code title="{e(name)}">{e(name[:12])}</code>'
            f'<span class="meta">{counts}</span></h3>'
            + (f'<ul class="tunes">{tunes}</ul>' if tunes else "")
            + (f'<ul class="prompts">{prompts}</ul>' if prompts else "")
            + "</article>"
        )
    return "".join(cards)


def _fault_action(rule: dict[str, Any]) -> str:
    parts = []
    if rule["status"] is not None:
        parts.append(f"{rule['status']}")
    if rule["latency_ms"] is not None:
        low, high = rule["latency_ms"]
        parts.append(f"+{low} ms" if low == high else f"+{low}-{high} ms")
    if rule["drop"]:
        parts.append("drop")
    if rule["truncate"]:
        parts.append("truncate")
    return " ".join(parts)


def faults_html(shot: Snapshot) -> str:
    if not shot.faults:
        return '<p class="empty">No fault rules: the API answers normally.</p>'
    items = []
    for rule in shot.faults:
        when = [f"times {rule['times']}" if rule["times"] else "always"]
        if rule["probability"] is not None:
            when.append(f"p={rule['probability']}")
        if rule["body"]:
            when.append("body " + dumps(rule["body"]).decode())
        when.append(f"fired {rule['fired']}")
        items.append(
            f'<li class="fault" data-fault="{rule["id"]}"><div class="grow">'
            f'<div><span class="id">#{rule["id"]}</span> <code>{e(rule["method"] or "*")} '
            f"{e(rule['path'])}</code> → <strong>{e(_fault_action(rule))}</strong></div>"
            f'<div class="meta">{e(rule["scope"])} · {e(" · ".join(when))}</div></div>'
            f'<button type="button" class="remove" data-remove-fault="{rule["id"]}">'
            "Remove</button></li>"
        )
    return f'<ul class="log">{"".join(items)}</ul>'


def callbacks_html(shot: Snapshot) -> str:
    if not shot.callbacks:
        return '<p class="empty">No callbacks yet.</p>'
    items = []
    for row in shot.callbacks:
        result = [f"HTTP {row['status_code']}"] if row["status_code"] is not None else []
        if row["latency_ms"] is not None:
            result.append(f"{row['latency_ms']:.0f} ms")
        result.append(_plural(row["attempts"], "attempt"))
        error = f'<div class="error">{e(row["error"])}</div>' if row["error"] else ""
        items.append(
            f'<li class="callback" data-callback="{row["id"]}"><div class="grow">'
            f'<div><span class="id">#{row["id"]}</span> {e(row["entity"])} {row["entity_id"]} '
            f'<span class="meta">→</span> <code class="url">{e(row["url"])}</code></div>'
            f'<div class="meta">{e(" · ".join(result))} · '
            f'tenant <code title="{e(row["tenant"])}">{e(row["tenant"][:12])}</code> · '
            f"{_when(row['finished_at'] or row['created_at'])}</div>{error}</div>"
            f"{_badge(row['status'])}</li>"
        )
    return f'<ul class="log">{"".join(items)}</ul>'


def violations_html(shot: Snapshot) -> str:
    if not shot.violations:
        return '<p class="empty">No contract violations.</p>'
    items = []
    for row in shot.violations:
        request = row["request"] if isinstance(row["request"], dict) else {}
        query = f"?{request['query']}" if request.get("query") else ""
        items.append(
            f'<li class="violation" data-violation="{row["id"]}"><div class="grow">'
            f'<div><span class="id">#{row["id"]}</span> <strong>{e(row["operation_id"])}</strong>'
            f" <code>{e(row['field'])}</code> {e(row['message'])}</div>"
            f'<div class="meta"><code>{e(request.get("method"))} {e(request.get("path"))}'
            f"{e(query)}</code> · {e(row['source'])} · "
            f'tenant <code title="{e(row["tenant"])}">{e(row["tenant"][:12])}</code> · '
            f"{_when(row['created_at'])}</div></div></li>"
        )
    return f'<ul class="log">{"".join(items)}</ul>'


def summary_html(shot: Snapshot) -> str:
    prompts = [row for tenant in shot.tenants.values() for row in tenant.prompts]
    pending = sum(prompt_status(row) == "pending" for row in prompts)
    tunes = sum(len(tenant.tunes) for tenant in shot.tenants.values())
    parts = [
        _plural(len(shot.tenants), "tenant"),
        _plural(tunes, "tune"),
        _plural(len(prompts), "prompt") + (f" ({pending} pending)" if pending else ""),
        _plural(len(shot.faults), "fault rule"),
    ]
    return e(" · ".join(parts))


PANELS: dict[str, Callable[[Snapshot], str]] = {
    "summary": summary_html,
    "tenants": tenants_html,
    "faults": faults_html,
    "callbacks": callbacks_html,
    "violations": violations_html,
    "count-faults": lambda shot: str(len(shot.faults)),
    "count-callbacks": lambda shot: str(len(shot.callbacks)),
    "count-violations": lambda shot: str(len(shot.violations)),
}


def panels(shot: Snapshot) -> dict[str, str]:
    """Each panel's HTML by the id of the element it fills."""
    return {name: render(shot) for name, render in PANELS.items()}


# the page ----------------------------------------------------------------
def _asset(name: str) -> str:
    return resources.files("mockserver").joinpath("dashboard", name).read_text("utf-8")


def _fill(template: str, values: dict[str, str]) -> str:
    """``{{name}}`` → its value, in one pass (a value is never searched for more names)."""
    return SLOT.sub(lambda match: values[match.group(1)], template)


def _csp(nonce: str) -> str:
    return (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
        "img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; "
        "frame-ancestors 'none'"
    )


def _token_ok(given: str | None, token: str | None) -> bool:
    return token is None or (
        given is not None and hmac.compare_digest(given.encode(), token.encode())
    )


def _limit(request: Request) -> int | None:
    raw = request.query_params.get("limit")
    if raw is None:
        return None
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise BadRequest(f"limit is a whole number from 1 to {MAX_LIMIT}")
    return int(raw)


def _poll_ms(request: Request) -> int:
    raw = request.query_params.get("poll", "")
    return max(MIN_POLL_MS, int(raw)) if raw.isdigit() else POLL_MS


def _etagged(request: Request, body: bytes) -> Response:
    """JSON with an ETag: an unchanged state costs the poller a 304 and no body."""
    tag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    headers = {"ETag": tag, "Cache-Control": "no-cache"}
    if tag in _tags(request.headers.get("if-none-match", "")):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json; charset=utf-8", headers=headers)


def _tags(header: str) -> Iterable[str]:
    return [part.strip().removeprefix("W/") for part in header.split(",")]


def routes(services: Services) -> list[BaseRoute]:
    token = services.settings.admin_token
    allowed = frozenset(services.settings.api_keys)
    template = _asset("page.html")
    css, js = _asset("dashboard.css"), _asset("dashboard.js")

    async def page(request: Request) -> Response:
        """The dashboard, filled in; without the admin token, an empty page that asks for it."""
        given = request.headers.get(TOKEN_HEADER) or request.query_params.get(TOKEN_PARAM)
        locked = not _token_ok(given, token)
        filled = {name: "" for name in PANELS} if locked else panels(snapshot(services, None))
        nonce = secrets.token_urlsafe(16)
        values = {
            **filled,
            "nonce": nonce,
            "css": css,
            "js": js,
            "poll": str(_poll_ms(request)),
            "locked": "true" if locked else "false",
            "guarded": "true" if token else "false",
        }
        headers = {
            "Content-Security-Policy": _csp(nonce),
            "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff",
        }
        return Response(
            _fill(template, values),
            status_code=401 if locked else 200,
            media_type="text/html; charset=utf-8",
            headers=headers,
        )

    async def panel_json(request: Request, tenant: str | None) -> Response:
        if not _token_ok(request.headers.get(TOKEN_HEADER), token):
            return json_response(401, {"error": "the dashboard needs the X-Admin-Token header"})
        shot = snapshot(services, tenant, _limit(request))
        return _etagged(request, dumps({"panels": panels(shot)}))

    async def state(request: Request, tenant: str | None) -> Response:
        if not _token_ok(request.headers.get(TOKEN_HEADER), token):
            return json_response(401, {"error": "the dashboard needs the X-Admin-Token header"})
        shot = snapshot(services, tenant, _limit(request))
        return _etagged(request, dumps(state_json(shot, services.settings.base_url)))

    return [
        Route(PAGE_PATH, page, methods=["GET"]),
        Route("/_mock/panels", scoped(panel_json, allowed), methods=["GET"]),
        Route("/_mock/state", scoped(state, allowed), methods=["GET"]),
    ]
