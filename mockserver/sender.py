"""HTTP/1.1 POSTs for callbacks: asyncio streams, h11, and a few kept-alive connections.

The dispatcher sends a callback as one POST and needs only the receiver's status code.
httpx did that at about 1.5 ms of event-loop time a request here, and at 5-7 ms with 32
deliveries in flight: httpcore's pool walks every connection, asking the socket whether
it is readable, each time a request starts or ends, and looks for an optional module
(``sniffio``) by importing it twice a request. This client does what a delivery needs
at about a tenth of that: a connection per delivery in flight, kept open afterwards for
the next delivery to the same origin, and the response parsed by h11 (what httpcore uses).

Redirects are not followed and proxies are not used (as with the httpx client before).
An https receiver's certificate is checked against certifi's roots, as httpx does. The
whole attempt (connect, send, answer) is bounded by ``timeout``.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from urllib.parse import quote, unquote, urlsplit

import h11

KEEPALIVE_SECONDS = 5.0
"""A kept-alive connection idle longer than this is closed rather than used again."""
READ_SIZE = 65536
_SAFE = "!#$%&'()*+,/:;=?@[]~"  # kept as given in a target; anything else is %-escaped


class DeliveryError(Exception):
    """A POST that got no complete answer; the class names the step that failed."""


class ConnectError(DeliveryError):
    """No connection to the receiver (refused, unreachable, TLS failed)."""


class Timeout(DeliveryError):
    """No complete answer within the timeout."""


class ProtocolError(DeliveryError):
    """The connection broke, or the receiver's answer was not HTTP/1.1."""


Origin = tuple[str, str, int]


@dataclass(frozen=True, slots=True)
class Target:
    """A callback URL taken apart once: where to connect and what to send."""

    origin: Origin
    host_header: str
    target: str
    authorization: str | None


@lru_cache(maxsize=1024)
def parse_url(url: str) -> Target:
    """``url`` taken apart; a :class:`ConnectError` when it names nowhere to connect."""
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("not an http(s) URL")
        host = parts.hostname
        if not host.isascii():
            host = host.encode("idna").decode("ascii")
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError as exc:  # a bad port or host name (UnicodeError is one)
        raise ConnectError(f"{exc}: {url}") from None
    shown = f"[{host}]" if ":" in host else host
    default = (scheme == "http" and port == 80) or (scheme == "https" and port == 443)
    target = quote(parts.path or "/", safe=_SAFE)
    if parts.query:
        target += "?" + quote(parts.query, safe=_SAFE)
    authorization = None
    if parts.username is not None:  # user:password@ in the URL means basic auth, as in httpx
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        authorization = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
    return Target(
        origin=(scheme, host, port),
        host_header=shown if default else f"{shown}:{port}",
        target=target,
        authorization=authorization,
    )


@dataclass(slots=True, eq=False)
class _Connection:
    origin: Origin
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    protocol: h11.Connection = field(default_factory=lambda: h11.Connection(h11.CLIENT))
    idle_since: float = 0.0

    def reusable(self, now: float) -> bool:
        """Still open at our end and the receiver's, and not idle too long."""
        return (
            now - self.idle_since < KEEPALIVE_SECONDS
            and not self.reader.at_eof()
            and not self.writer.is_closing()
        )

    def close(self) -> None:
        self.writer.close()


class _Stale(Exception):
    """A kept-alive connection turned out closed before any answer: send on a new one."""


class Sender:
    """POSTs to callback URLs; one per dispatcher, used from one event loop."""

    def __init__(self, timeout: float, headers: Mapping[str, str], max_idle: int = 32) -> None:
        self.timeout = timeout
        self.headers = [(name.encode(), value.encode()) for name, value in headers.items()]
        self.max_idle = max_idle
        self._idle: list[_Connection] = []
        self._tls: ssl.SSLContext | None = None

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> int:
        """POST ``body``; the receiver's status code, or a :class:`DeliveryError`."""
        target = parse_url(url)
        request = h11.Request(
            method="POST",
            target=target.target,
            headers=self._headers(target, body, headers),
        )
        try:
            async with asyncio.timeout(self.timeout):
                connection = self._take(target.origin)
                if connection is not None:
                    try:
                        return await self._exchange(connection, request, body, reused=True)
                    except _Stale:
                        pass
                connection = await self._connect(target.origin)
                return await self._exchange(connection, request, body, reused=False)
        except TimeoutError:
            raise Timeout(f"no answer within {self.timeout:g} s") from None

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def _headers(
        self, target: Target, body: bytes, extra: Mapping[str, str]
    ) -> list[tuple[bytes, bytes]]:
        headers = [(b"Host", target.host_header.encode()), *self.headers]
        headers += [(name.encode(), value.encode()) for name, value in extra.items()]
        if target.authorization is not None:
            headers.append((b"Authorization", target.authorization.encode()))
        headers.append((b"Content-Length", str(len(body)).encode()))
        return headers

    def _take(self, origin: Origin) -> _Connection | None:
        """The most recently used open connection to ``origin``; worn-out ones are closed."""
        now = time.monotonic()
        found = None
        for index in range(len(self._idle) - 1, -1, -1):
            connection = self._idle[index]
            if not connection.reusable(now):
                del self._idle[index]
                connection.close()
            elif found is None and connection.origin == origin:
                del self._idle[index]
                found = connection
        return found

    def _keep(self, connection: _Connection) -> None:
        connection.idle_since = time.monotonic()
        self._idle.append(connection)
        if len(self._idle) > self.max_idle:
            self._idle.pop(0).close()

    async def _connect(self, origin: Origin) -> _Connection:
        scheme, host, port = origin
        tls = None
        if scheme == "https":
            if self._tls is None:
                self._tls = _tls_context()
            tls = self._tls
        try:
            reader, writer = await asyncio.open_connection(
                host, port, ssl=tls, server_hostname=host if tls else None, limit=READ_SIZE
            )
        except (OSError, ssl.SSLError) as exc:
            raise ConnectError(str(exc) or type(exc).__name__) from None
        return _Connection(origin, reader, writer)

    async def _exchange(
        self, connection: _Connection, request: h11.Request, body: bytes, reused: bool
    ) -> int:
        protocol = connection.protocol
        answered = False
        try:
            data = protocol.send(request) or b""
            data += (protocol.send(h11.Data(data=body)) or b"") + (
                protocol.send(h11.EndOfMessage()) or b""
            )
            connection.writer.write(data)
            await connection.writer.drain()
            status = 0
            while True:
                event = protocol.next_event()
                if event is h11.NEED_DATA:
                    chunk = await connection.reader.read(READ_SIZE)
                    if not chunk and not answered and reused:
                        raise _Stale
                    protocol.receive_data(chunk)
                elif isinstance(event, h11.Response):
                    answered = True
                    status = event.status_code
                elif isinstance(event, h11.InformationalResponse):
                    answered = True
                elif isinstance(event, h11.EndOfMessage):
                    break
                elif isinstance(event, h11.ConnectionClosed):
                    raise ProtocolError("the receiver closed the connection without an answer")
        except _Stale:
            connection.close()
            raise
        except (OSError, h11.ProtocolError) as exc:
            connection.close()
            if reused and not answered and isinstance(exc, OSError):
                raise _Stale from None
            raise ProtocolError(str(exc) or type(exc).__name__) from None
        except BaseException:
            connection.close()
            raise
        if protocol.our_state is h11.DONE and protocol.their_state is h11.DONE:
            protocol.start_next_cycle()
            self._keep(connection)
        else:
            connection.close()
        return status


def _tls_context() -> ssl.SSLContext:
    try:
        import certifi
    except ImportError:  # pragma: no cover - certifi comes with httpx
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=certifi.where())
