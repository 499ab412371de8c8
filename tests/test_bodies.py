"""Multipart bodies are parsed in memory with python-multipart's tokenizer: the same parts,
names, files and errors as Starlette's form parser, without its spooled files."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import pytest
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartParser
from starlette.requests import Request

from mockserver.bodies import UploadedFile, _multipart_pairs
from mockserver.errors import BadRequest

BOUNDARY = b"xyzBOUND"


def request(content_type: bytes) -> Request:
    headers = [(b"content-type", content_type)]
    return Request({"type": "http", "method": "POST", "path": "/", "headers": headers})


def starlette_pairs(content_type: bytes, raw: bytes, limit: int) -> object:
    """What Starlette's parser makes of the body, in our shape (or the error's message)."""

    async def parse() -> object:
        async def stream():
            yield raw

        parser = MultiPartParser(request(content_type).headers, stream(), max_part_size=limit)
        try:
            form = await parser.parse()
        except Exception as exc:  # compared by message
            return f"malformed multipart body: {exc}"
        pairs = []
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                data = await value.read()
                value = UploadedFile(value.filename or "", value.content_type or "", data)
            pairs.append((name, value))
        await form.close()
        return pairs

    return asyncio.run(parse())


def our_pairs(content_type: bytes, raw: bytes, limit: int, chunk: int = 1 << 20) -> object:
    """What ours makes of the body, arriving in pieces of ``chunk`` bytes."""

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(raw), chunk):
            yield raw[start : start + chunk]

    try:
        return asyncio.run(_multipart_pairs(pieces(), content_type.decode("latin-1"), limit))
    except BadRequest as error:
        return error.message


def body(parts: list[tuple[list[bytes], bytes]], epilogue: bytes = b"", end: bool = True) -> bytes:
    out = []
    for headers, data in parts:
        out.append(b"--" + BOUNDARY + b"\r\n" + b"".join(h + b"\r\n" for h in headers))
        out.append(b"\r\n" + data + b"\r\n")
    if end:
        out.append(b"--" + BOUNDARY + b"--" + epilogue)
    return b"".join(out)


PHOTO = bytes(random.Random(3).randrange(256) for _ in range(5000))
CASES = [
    (
        b"multipart/form-data; boundary=" + BOUNDARY,
        body(
            [
                ([b'Content-Disposition: form-data; name="tune[title]"'], b"hello"),
                (
                    [
                        b'Content-Disposition: form-data; name="tune[images][]"; filename="a.jpg"',
                        b"Content-Type: image/jpeg",
                    ],
                    PHOTO,
                ),
                ([b'Content-Disposition: form-data; name="x"; filename=""'], b""),
                ([b'content-disposition: form-data; name="caf\xc3\xa9"'], "é ü".encode()),
                ([b'Content-Disposition: form-data; name="n"'], b"a\r\nb--" + BOUNDARY + b"z"),
            ]
        ),
    ),
    (
        b'multipart/form-data; charset=latin-1; boundary="' + BOUNDARY + b'"',
        body([([b'Content-Disposition: form-data; name="k\xe9"'], b"\xe9")], b"\r\nepilogue"),
    ),
    (
        b"multipart/form-data; charset=bogus; boundary=" + BOUNDARY,
        b"\r\n" + body([([b"Content-Disposition: form-data; name=k"], b"v")]),
    ),
    (b"multipart/form-data; boundary=" + BOUNDARY, body([([b"Content-Type: text/plain"], b"v")])),
    (b"multipart/form-data", b"--xyz\r\nnot a part"),
    (b"multipart/form-data; boundary=xyz", b"--xyz\r\nnot a part"),
    (b"multipart/form-data; boundary=" + BOUNDARY, body([([b"X: y"], b"1")], end=False)),
    (b"multipart/form-data; boundary=" + BOUNDARY, b""),
]


@pytest.mark.parametrize(("content_type", "raw"), CASES)
@pytest.mark.parametrize("limit", [50 * 1024 * 1024, 3])
@pytest.mark.parametrize("chunk", [1 << 20, 1000, 7])
def test_parts_are_what_starlette_makes_of_them(content_type, raw, limit, chunk):
    """Whatever pieces the body arrives in: a part, a header or the boundary may be
    split between two."""
    expected = starlette_pairs(content_type, raw, limit)
    assert our_pairs(content_type, raw, limit, chunk) == expected


def test_mangled_bodies_fail_or_pass_as_with_starlette():
    rng = random.Random(11)
    for content_type, raw in CASES[:3]:
        for _ in range(150):
            mangled = bytearray(raw)
            at = rng.randrange(len(mangled))
            kind = rng.randrange(3)
            if kind == 0:
                mangled[at] = rng.choice(b'\r\n-"; =:a\x00\xff')
            elif kind == 1:
                mangled[at:at] = rng.choice([b"\r\n", b"--" + BOUNDARY, b" ", b"--"])
            else:
                del mangled[at:]
            data = bytes(mangled)
            limit = 50 * 1024 * 1024
            assert our_pairs(content_type, data, limit) == starlette_pairs(
                content_type, data, limit
            )
