"""Callbacks: an outbox written with the state change, and a dispatcher that delivers it.

A callback row is inserted in the same transaction as the change that causes it
(a tune ready, a prompt done or failed), with the body the entity's GET would
answer at that moment. The dispatcher POSTs it (aiohttp), off the request
path, a bounded number at a time, in order within a chain (a tune before its
prompts). A row stays pending until its delivery is recorded, so a crash or a
restart delivers it afterwards: at least once, never lost.

Replicas sharing the database each run a dispatcher. A dispatcher claims the
rows it delivers (a lease, renewed while the delivery runs), so every callback
is sent by one replica, once, unless that replica dies during the delivery:
then another takes the row when the lease runs out and sends it again, and the
log counts it as ``interrupted``. Receivers can tell such a repeat by the
``X-Astria-Mock-Callback`` header, the row's id.

Most rows never wait for a pass of the dispatcher's loop: the transaction that
writes a row also claims it for this process's dispatcher when a delivery slot is
free and no earlier callback of its chain is pending, and once that transaction has
committed, the writer hands the row over (:meth:`Outbox.committed`) and its POST
starts. The loop claims what is left: rows over the bound, rows behind an earlier
one of their chain, retries, rows of other processes whose lease ran out.
"""

from __future__ import annotations

import asyncio
import importlib
import ipaddress
import logging
import time
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import anyio
import anyio.abc
from yarl import URL

from . import __version__
from .clock import Clock, iso
from .duework import POLL_SECONDS, run_when_due
from .errors import Unprocessable
from .gallery import GALLERY_IDS
from .jsontext import dumps
from .serialize import prompt_json, tune_json
from .settings import Settings
from .store import Row, Store, Tx

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger("astria_mock.callbacks")
CONCURRENT_DELIVERIES = 32
MAX_BACKOFF = 30.0
CALLBACK_ID_HEADER = "X-Astria-Mock-Callback"


_KEPT = "!#$%&'()*+,/:;=?@[]~"
"""Characters of a callback URL sent as they are; anything else (a space, non-ASCII) is
%-escaped."""


def _as_given(url: str) -> URL:
    """The URL as the client gave it: its %-escapes are not normalised (a webhook secret
    in the query is compared byte for byte)."""
    return URL(quote(url, safe=_KEPT), encoded=True)


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
    """Writes callback rows inside the caller's transaction.

    ``tune_ready`` and ``prompt_done`` return the row queued (or None); once the
    transaction has committed, the caller passes it to :meth:`committed`, which starts
    its delivery at once when the row was claimed for this process's dispatcher."""

    def __init__(
        self, settings: Settings, clock: Clock, dispatcher: Dispatcher | None = None
    ) -> None:
        self.base_url = settings.base_url
        self.wrapped = settings.callback_body == "wrapped"
        self.clock = clock
        self.dispatcher = dispatcher

    def tune_ready(self, tx: Tx, tune: Row) -> Row | None:
        url = tune["attrs"].get("callback")
        if not url:
            return None
        body = tune_json(tune, self.base_url)
        return self._insert(tx, tune["tenant"], "tune", tune["id"], f"tune:{tune['id']}", url, body)

    def prompt_done(self, tx: Tx, prompt: Row) -> Row | None:
        url = prompt["attrs"].get("callback")
        if not url:
            return None
        tune_id = prompt["tune_id"]
        chain = f"prompt:{prompt['id']}" if tune_id in GALLERY_IDS else f"tune:{tune_id}"
        body = prompt_json(prompt, self.base_url)
        return self._insert(tx, prompt["tenant"], "prompt", prompt["id"], chain, url, body)

    def committed(self, row: Row | None) -> None:
        """The transaction that queued ``row`` has committed: deliver it now if this
        process claimed it, or else tell the dispatcher there is work."""
        if row is None or self.dispatcher is None:
            return
        if row["claimed_until"] is not None:
            self.dispatcher.start(row)
        else:
            self.dispatcher.wake()

    def _insert(
        self, tx: Tx, tenant: str, entity: str, entity_id: int, chain: str, url: str, body: Any
    ) -> Row:
        payload = {entity: body} if self.wrapped else body
        now = time.time()
        row: Row = {
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
            "next_attempt_at": now,
            "claimed_until": None,
        }
        if self.dispatcher is not None:
            row["claimed_until"] = self.dispatcher.claim_new(tx, chain, now)
        tx.insert_callback(row)
        return row


class Dispatcher:
    """Delivers due callbacks; ``changed`` wakes those waiting on the delivery log.

    Every row this process holds (claimed, not yet recorded) is in ``_held``; at most
    ``CONCURRENT_DELIVERIES`` are claimed at once, and at most that many POSTs run. One
    task renews the leases of all of them together while they are held."""

    def __init__(self, store: Store, settings: Settings, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self.retries = settings.callback_retries
        self.timeout = settings.callback_timeout
        self.lease = settings.lease_seconds
        self._wakeup: asyncio.Event | None = None
        self._changed: asyncio.Condition | None = None
        self._held: set[int] = set()
        self._waiting: deque[Row] = deque()
        self._sending = 0
        self._deliveries: anyio.abc.TaskGroup | None = None
        self._session: aiohttp.ClientSession | None = None
        self._client_errors: tuple[type[Exception], ...] = ()
        """What a failed POST raises (aiohttp's; imported when the dispatcher starts)."""
        self._backlog = False
        """Due rows may be left that no pass has claimed (the bound was reached)."""

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

    def claim_new(self, tx: Tx, chain: str, now: float) -> float | None:
        """For a row about to be inserted in ``tx``: the end of a lease for this process
        when it will send the row right after the commit (it is running, a slot is free
        and no earlier callback of the chain is pending), or None to leave it to a pass."""
        if self._deliveries is None:
            return None
        if len(self._held) >= CONCURRENT_DELIVERIES:
            self._backlog = True
            return None
        if tx.chain_pending(chain):
            return None  # the earlier one's delivery wakes the loop (see _deliver)
        return now + self.lease

    def start(self, row: Row) -> None:
        """Deliver a row this process claimed, as soon as a slot is free."""
        if self._deliveries is None:
            return  # stopping: the lease runs out and a pass (here or elsewhere) takes it
        self._held.add(row["id"])
        self._waiting.append(row)
        self._fill()

    def _fill(self) -> None:
        while self._waiting and self._sending < CONCURRENT_DELIVERIES:
            assert self._deliveries is not None
            self._sending += 1
            self._deliveries.start_soon(self._deliver, self._waiting.popleft())

    async def run(self) -> None:
        self._wakeup = asyncio.Event()
        self._changed = asyncio.Condition()
        headers = {"User-Agent": f"astria-mock/{__version__}", "Content-Type": "application/json"}
        # aiohttp takes a tenth of a second to import: in a thread, while the app starts.
        aiohttp = await anyio.to_thread.run_sync(importlib.import_module, "aiohttp")
        self._client_errors = (aiohttp.ClientError,)
        self._session = aiohttp.ClientSession(
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            connector=aiohttp.TCPConnector(limit=CONCURRENT_DELIVERIES),
            trust_env=False,  # no proxy from the environment, as the real API's sender
        )
        try:
            async with anyio.create_task_group() as deliveries:
                self._deliveries = deliveries

                async def start_due() -> float | None:
                    now = time.time()
                    self._start_due(now)
                    # Due rows not started wait for a delivery to finish, which wakes the loop.
                    with self.store.begin() as tx:
                        return tx.next_callback_due(after=now)

                deliveries.start_soon(self._renew_held)
                poll = POLL_SECONDS if self.store.shared else None
                await run_when_due(start_due, self._wakeup, log, poll)
        finally:
            self._deliveries = None
            await self._session.close()

    def _start_due(self, now: float) -> None:
        """Claim due rows, up to the concurrency bound, and start their deliveries. The
        claim leaves out rows behind an earlier pending one of their chain."""
        free = CONCURRENT_DELIVERIES - len(self._held)
        if free <= 0:
            self._backlog = True
            return
        self._backlog = False
        with self.store.begin() as tx:
            claimed = tx.claim_due_callbacks(now, self.lease, free)
        if len(claimed) == free:
            self._backlog = True  # maybe more than the bound let us take
        for row in claimed:
            self.start(row)

    async def _renew_held(self) -> None:
        """Every third of the lease, push the lease of every row held a lease ahead, so
        a delivery that takes long is not taken over while it runs."""
        while True:
            await anyio.sleep(self.lease / 3)
            if not self._held:
                continue
            try:
                with self.store.begin() as tx:
                    tx.extend_claims("callbacks", list(self._held), time.time() + self.lease)
            except Exception:
                log.exception("could not renew the leases of %d callbacks", len(self._held))

    async def _post(self, row: Row) -> tuple[int | None, str | None]:
        """One attempt: the receiver's status code, and what went wrong if anything did."""
        assert self._session is not None
        headers = {CALLBACK_ID_HEADER: str(row["id"])}
        try:
            async with self._session.post(
                _as_given(row["url"]),
                data=row["body"].encode(),
                headers=headers,
                allow_redirects=False,
            ) as response:
                await response.read()
                status = response.status
        except TimeoutError:
            return None, f"Timeout: no answer within {self.timeout:g} s"
        except self._client_errors as exc:
            return None, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if not 200 <= status < 300:
            return status, f"receiver answered {status}"
        return status, None

    async def _deliver(self, row: Row) -> None:
        attempts = row["attempts"] + 1
        started = time.perf_counter()
        try:
            status_code, error = await self._post(row)
        finally:
            self._sending -= 1
            self._fill()
        latency = round((time.perf_counter() - started) * 1000, 3)
        values: dict[str, Any] = {
            "attempts": attempts,
            "status_code": status_code,
            "latency_ms": latency,
            "error": error,
            "claimed_until": None,
        }
        again = False
        if error is None:
            values.update(status="delivered", finished_at=iso(self.clock.now()))
        elif attempts <= self.retries:
            backoff = min(MAX_BACKOFF, 0.5 * 2 ** (attempts - 1))
            values.update(next_attempt_at=time.time() + backoff)
            again = True
        else:
            values.update(status="failed", finished_at=iso(self.clock.now()))
        # The loop needs a pass when this row comes again, when a later callback of its
        # chain waited for it, or when the bound left due rows unclaimed.
        wake = True
        try:
            with self.store.begin() as tx:
                tx.update_callback(row["id"], **values)
                wake = again or self._backlog or tx.chain_pending(row["chain"])
        except Exception:
            log.exception("could not record the delivery of callback %s", row["id"])
        finally:
            self._held.discard(row["id"])
            if wake:
                self.wake()
        if self._changed is not None:
            async with self._changed:
                self._changed.notify_all()
