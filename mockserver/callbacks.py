"""Callbacks: an outbox written with the state change, and a dispatcher that delivers it.

A callback row is inserted in the same transaction as the change that causes it
(a tune ready, a prompt done or failed), with the body the entity's GET would
answer at that moment. The dispatcher POSTs due rows with httpx, off the request
path, a bounded number at a time, in order within a chain (a tune before its
prompts). A row stays pending until its delivery is recorded, so a crash or a
restart delivers it afterwards: at least once, never lost.

Replicas sharing the database each run a dispatcher. A dispatcher claims the
rows it delivers (a lease, renewed while the delivery runs), so every callback
is sent by one replica, once, unless that replica dies during the delivery:
then another takes the row when the lease runs out and sends it again, and the
log counts it as ``interrupted``. Receivers can tell such a repeat by the
``X-Astria-Mock-Callback`` header, the row's id.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Iterable
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import anyio
import anyio.abc
import httpx

from . import __version__
from .clock import Clock, iso
from .duework import POLL_SECONDS, keep_claim, run_when_due
from .errors import Unprocessable
from .gallery import GALLERY_IDS
from .jsontext import dumps
from .serialize import prompt_json, tune_json
from .settings import Settings
from .store import Row, Store, Tx

log = logging.getLogger("astria_mock.callbacks")
CONCURRENT_DELIVERIES = 32
MAX_BACKOFF = 30.0
CALLBACK_ID_HEADER = "X-Astria-Mock-Callback"


def check_callback_url(url: str | None, allowed: Iterable[str], field: str = "callback") -> None:
    """A 422 unless ``url`` is http(s) and, when an allow-list is set, its host is on it.

    Entries are host names (``hooks.example.com``, ``*.example.com``) or IP networks
    (``127.0.0.1``, ``10.0.0.0/8``); names are not resolved.
    """
    if not url:
        return
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise Unprocessable.on(field, "must be an http or https URL")
    entries = list(allowed)
    if entries and not _host_allowed(parts.hostname.lower(), entries):
        raise Unprocessable.on(field, f"host {parts.hostname} is not allowed for callbacks here")


def _host_allowed(host: str, entries: list[str]) -> bool:
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for entry in entries:
        entry = entry.strip().lower()
        if address is not None:
            try:
                if address in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                continue
        elif (entry.startswith("*.") and host.endswith(entry[1:])) or host == entry:
            return True
    return False


class Outbox:
    """Writes callback rows inside the caller's transaction."""

    def __init__(self, settings: Settings, clock: Clock) -> None:
        self.base_url = settings.base_url
        self.wrapped = settings.callback_body == "wrapped"
        self.clock = clock

    def tune_ready(self, tx: Tx, tune: Row) -> bool:
        url = tune["attrs"].get("callback")
        if not url:
            return False
        body = tune_json(tune, self.base_url)
        self._insert(tx, tune["tenant"], "tune", tune["id"], f"tune:{tune['id']}", url, body)
        return True

    def prompt_done(self, tx: Tx, prompt: Row) -> bool:
        url = prompt["attrs"].get("callback")
        if not url:
            return False
        tune_id = prompt["tune_id"]
        chain = f"prompt:{prompt['id']}" if tune_id in GALLERY_IDS else f"tune:{tune_id}"
        body = prompt_json(prompt, self.base_url)
        self._insert(tx, prompt["tenant"], "prompt", prompt["id"], chain, url, body)
        return True

    def _insert(
        self, tx: Tx, tenant: str, entity: str, entity_id: int, chain: str, url: str, body: Any
    ) -> None:
        payload = {entity: body} if self.wrapped else body
        tx.insert_callback(
            {
                "id": tx.next_id("callbacks"),
                "tenant": tenant,
                "entity": entity,
                "entity_id": entity_id,
                "chain": chain,
                "url": url,
                "body": dumps(payload).decode(),
                "created_at": iso(self.clock.now()),
                "status": "pending",
                "attempts": 0,
                "next_attempt_at": time.time(),
            }
        )


class Dispatcher:
    """Delivers due callbacks; ``changed`` wakes those waiting on the delivery log."""

    def __init__(self, store: Store, settings: Settings, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self.retries = settings.callback_retries
        self.timeout = settings.callback_timeout
        self.lease = settings.lease_seconds
        self._wakeup: asyncio.Event | None = None
        self._changed: asyncio.Condition | None = None
        self._inflight: set[int] = set()

    def wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    async def wait_for_change(self, timeout: float) -> None:
        if self._changed is None:
            await asyncio.sleep(timeout)
            return
        async with self._changed:
            with anyio.move_on_after(timeout):
                await self._changed.wait()

    async def run(self) -> None:
        self._wakeup = asyncio.Event()
        self._changed = asyncio.Condition()
        headers = {"User-Agent": f"astria-mock/{__version__}", "Content-Type": "application/json"}
        client = httpx.AsyncClient(
            timeout=self.timeout, headers=headers, follow_redirects=False, trust_env=False
        )
        async with client, anyio.create_task_group() as deliveries:

            async def start_due() -> float | None:
                now = time.time()
                self._start_due(client, deliveries)
                # Due rows not started wait for a delivery to finish, which wakes the loop.
                with self.store.begin() as tx:
                    return tx.next_callback_due(after=now)

            poll = POLL_SECONDS if self.store.shared else None
            await run_when_due(start_due, self._wakeup, log, poll)

    def _start_due(self, client: httpx.AsyncClient, deliveries: anyio.abc.TaskGroup) -> None:
        """Claim due rows, up to the concurrency bound, and start their deliveries. The
        claim leaves out rows behind an earlier pending one of their chain."""
        free = CONCURRENT_DELIVERIES - len(self._inflight)
        if free <= 0:
            return
        with self.store.begin() as tx:
            claimed = tx.claim_due_callbacks(time.time(), self.lease, free)
        for row in claimed:
            self._inflight.add(row["id"])
            deliveries.start_soon(self._deliver, client, row)

    async def _post(self, client: httpx.AsyncClient, row: Row) -> tuple[int | None, str | None]:
        """One attempt: the receiver's status code, and what went wrong if anything did."""
        headers = {CALLBACK_ID_HEADER: str(row["id"])}
        try:
            response = await client.post(row["url"], content=row["body"].encode(), headers=headers)
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if not 200 <= response.status_code < 300:
            return response.status_code, f"receiver answered {response.status_code}"
        return response.status_code, None

    def _renew(self, callback_id: int, until: float) -> None:
        with self.store.begin() as tx:
            tx.extend_claim("callbacks", callback_id, until)

    async def _deliver(self, client: httpx.AsyncClient, row: Row) -> None:
        attempts = row["attempts"] + 1
        started = time.perf_counter()
        async with anyio.create_task_group() as holding:
            holding.start_soon(keep_claim, partial(self._renew, row["id"]), self.lease)
            status_code, error = await self._post(client, row)
            holding.cancel_scope.cancel()
        latency = round((time.perf_counter() - started) * 1000, 3)
        values: dict[str, Any] = {
            "attempts": attempts,
            "status_code": status_code,
            "latency_ms": latency,
            "error": error,
            "claimed_until": None,
        }
        if error is None:
            values.update(status="delivered", finished_at=iso(self.clock.now()))
        elif attempts <= self.retries:
            backoff = min(MAX_BACKOFF, 0.5 * 2 ** (attempts - 1))
            values.update(next_attempt_at=time.time() + backoff)
        else:
            values.update(status="failed", finished_at=iso(self.clock.now()))
        try:
            with self.store.begin() as tx:
                tx.update_callback(row["id"], **values)
        except Exception:
            log.exception("could not record the delivery of callback %s", row["id"])
        finally:
            self._inflight.discard(row["id"])
            self.wake()
        if self._changed is not None:
            async with self._changed:
                self._changed.notify_all()
