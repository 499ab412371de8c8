"""The callback sender against a scripted HTTP/1.1 server on 127.0.0.1: kept-alive
connections, receivers that close them, answers of every framing, and failures."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from mockserver.sender import ConnectError, ProtocolError, Sender, Timeout

Answer = Callable[[dict[str, Any]], Awaitable[bytes | None]]
NO_CONTENT = b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"


class Scripted:
    """Reads requests, records them, and writes what ``answer`` returns for each (None:
    close the connection without answering; an answer with ``Connection: close``: close
    it after answering)."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.requests: list[dict[str, Any]] = []
        self.connections = 0
        self.writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> Scripted:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *_: object) -> None:
        for writer in self.writers:
            writer.close()
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                line, *fields = head.decode("latin-1").rstrip("\r\n").split("\r\n")
                headers = {}
                for field in fields:
                    name, _, value = field.partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", 0)))
                request = {"line": line, "headers": headers, "body": body}
                self.requests.append(request)
                answer = await self.answer(request)
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
                if b"connection: close" in answer.lower():
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def run(coroutine: Awaitable[Any]) -> Any:
    async def main() -> Any:
        return await coroutine

    return asyncio.run(main())


async def no_content(_request: dict[str, Any]) -> bytes:
    return NO_CONTENT


def test_a_post_sends_the_body_and_headers_and_keeps_the_connection():
    async def scenario() -> Scripted:
        async with Scripted(no_content) as server:
            sender = Sender(5, {"User-Agent": "astria-mock/test"})
            for n in range(3):
                status = await sender.post(f"{server.url}/hook?n={n}", b'{"a": 1}', {"X-N": str(n)})
                assert status == 204
            await sender.aclose()
        return server

    server = run(scenario())
    assert server.connections == 1  # kept alive between the three
    first = server.requests[0]
    assert first["line"] == "POST /hook?n=0 HTTP/1.1"
    assert first["body"] == b'{"a": 1}'
    assert first["headers"]["host"] == server.url.removeprefix("http://")
    assert first["headers"]["user-agent"] == "astria-mock/test"
    assert first["headers"]["x-n"] == "0"
    assert first["headers"]["content-length"] == "8"


def test_the_target_is_sent_as_given_and_escaped_only_where_it_must_be():
    async def scenario() -> Scripted:
        async with Scripted(no_content) as server:
            sender = Sender(5, {})
            await sender.post(f"{server.url}/h/ä b?secret=a%2Fb%3Dc&x=y z#frag", b"{}", {})
            await sender.post(server.url, b"{}", {})
            await sender.aclose()
        return server

    server = run(scenario())
    assert server.requests[0]["line"] == "POST /h/%C3%A4%20b?secret=a%2Fb%3Dc&x=y%20z HTTP/1.1"
    assert server.requests[1]["line"] == "POST / HTTP/1.1"


def test_user_and_password_in_the_url_are_sent_as_basic_auth():
    async def scenario() -> Scripted:
        async with Scripted(no_content) as server:
            sender = Sender(5, {})
            url = server.url.replace("http://", "http://hook%40user:s%3Acret@")
            await sender.post(f"{url}/h", b"{}", {})
            await sender.aclose()
        return server

    server = run(scenario())
    expected = base64.b64encode(b"hook@user:s:cret").decode()
    assert server.requests[0]["headers"]["authorization"] == f"Basic {expected}"


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nthank",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    ],
    ids=["length", "chunked", "continue"],
)
def test_answers_of_each_framing_are_read_to_the_end(answer: bytes):
    async def reply(_request: dict[str, Any]) -> bytes:
        return answer

    async def scenario() -> tuple[list[int], Scripted]:
        async with Scripted(reply) as server:
            sender = Sender(5, {})
            statuses = [await sender.post(server.url, b"{}", {}) for _ in range(2)]
            await sender.aclose()
        return statuses, server

    statuses, server = run(scenario())
    assert statuses == [200, 200]
    assert server.connections == 1


def test_an_answer_that_closes_the_connection_is_read_and_the_next_post_reconnects():
    async def reply(_request: dict[str, Any]) -> bytes:
        return b"HTTP/1.1 500 Oops\r\nConnection: close\r\n\r\nbroken"

    async def scenario() -> tuple[list[int], Scripted]:
        async with Scripted(reply) as server:
            sender = Sender(5, {})
            statuses = [await sender.post(server.url, b"{}", {}) for _ in range(2)]
            await sender.aclose()
        return statuses, server

    statuses, server = run(scenario())
    assert statuses == [500, 500]
    assert server.connections == 2


def test_a_kept_connection_the_receiver_closed_is_replaced_without_a_failure():
    async def scenario() -> tuple[int, Scripted]:
        async with Scripted(no_content) as server:
            sender = Sender(5, {})
            assert await sender.post(server.url, b"{}", {}) == 204
            for writer in server.writers:  # the receiver drops its idle connection
                writer.close()
            status = await sender.post(server.url, b"{}", {})
            await sender.aclose()
        return status, server

    status, server = run(scenario())
    assert status == 204
    assert server.connections == 2
    assert len(server.requests) == 2


def test_a_kept_connection_closed_as_the_post_went_out_is_retried_on_a_new_one():
    answers = [NO_CONTENT, None, NO_CONTENT]  # None: hang up on the second, unanswered

    async def reply(_request: dict[str, Any]) -> bytes | None:
        return answers.pop(0)

    async def scenario() -> tuple[list[int], Scripted]:
        async with Scripted(reply) as server:
            sender = Sender(5, {})
            statuses = [await sender.post(server.url, b"{}", {}) for _ in range(2)]
            await sender.aclose()
        return statuses, server

    statuses, server = run(scenario())
    assert statuses == [204, 204]
    assert server.connections == 2
    assert len(server.requests) == 3  # the second POST went out twice


def test_a_receiver_that_hangs_up_without_answering_is_a_protocol_error():
    async def hang_up(_request: dict[str, Any]) -> None:
        return None

    async def scenario() -> None:
        async with Scripted(hang_up) as server:
            sender = Sender(5, {})
            with pytest.raises(ProtocolError):
                await sender.post(server.url, b"{}", {})
            await sender.aclose()

    run(scenario())


def test_a_receiver_that_never_answers_times_out():
    async def never(_request: dict[str, Any]) -> bytes:
        await asyncio.sleep(60)
        return NO_CONTENT

    async def scenario() -> None:
        async with Scripted(never) as server:
            sender = Sender(0.2, {})
            with pytest.raises(Timeout, match=r"no answer within 0\.2 s"):
                await sender.post(server.url, b"{}", {})
            await sender.aclose()

    run(scenario())


def test_nothing_listening_is_a_connect_error():
    async def scenario() -> str:
        async with Scripted(no_content) as server:
            url = server.url
        sender = Sender(5, {})
        with pytest.raises(ConnectError) as raised:
            await sender.post(url, b"{}", {})
        return type(raised.value).__name__

    assert run(scenario()) == "ConnectError"


def test_a_url_with_a_bad_port_is_a_connect_error():
    async def scenario() -> None:
        with pytest.raises(ConnectError):
            await Sender(5, {}).post("http://127.0.0.1:99999/x", b"{}", {})

    run(scenario())
