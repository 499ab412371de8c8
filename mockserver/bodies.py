"""Request bodies in JSON, multipart or urlencoded, read within a size limit and decoded
into one nested dict of the shape the operation's JSON schema describes."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from python_multipart.exceptions import FormParserError
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from .errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from .forms import decode_pairs

JSON = "application/json"
MULTIPART = "multipart/form-data"
URLENCODED = "application/x-www-form-urlencoded"


@dataclass(frozen=True, slots=True)
class UploadedFile:
    """A file part of a multipart body, held in memory."""

    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Body:
    """A decoded body: its nested values and the media type it came in."""

    values: dict[str, Any]
    media_type: str | None

    @property
    def from_form(self) -> bool:
        return self.media_type in (MULTIPART, URLENCODED)


async def read_limited(request: Request, limit: int) -> bytes:
    """The whole body, or a 413 as soon as it is known to pass ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body is larger than the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body is larger than the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def decode_body(request: Request, accepted: tuple[str, ...], limit: int) -> Body:
    raw = await read_limited(request, limit)
    header = request.headers.get("content-type", "")
    media_type = header.split(";", 1)[0].strip().lower()
    if not raw and not media_type:
        return Body({}, None)
    if media_type not in accepted:
        wanted = ", ".join(accepted) or "no body"
        raise UnsupportedMediaType(
            f"content type {media_type or 'none'!r} is not accepted; send {wanted}"
        )
    if media_type == JSON:
        return Body(_json_object(raw), JSON)
    if media_type == URLENCODED:
        return Body(decode_pairs(_urlencoded_pairs(raw)), URLENCODED)
    return Body(decode_pairs(await _multipart_pairs(request, raw, limit)), MULTIPART)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"malformed JSON body: {exc}") from None
    if not isinstance(value, dict):
        raise BadRequest('the JSON body must be an object, e.g. {"tune": {...}}')
    return value


def _urlencoded_pairs(raw: bytes) -> list[tuple[str, Any]]:
    try:
        text = raw.decode("utf-8")
        return parse_qsl(text, keep_blank_values=True, strict_parsing=False, errors="strict")
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest(f"malformed form body: {exc}") from None


async def _multipart_pairs(request: Request, raw: bytes, limit: int) -> list[tuple[str, Any]]:
    async def stream() -> AsyncGenerator[bytes, None]:
        yield raw

    parser = MultiPartParser(request.headers, stream(), max_part_size=limit)
    try:
        form = await parser.parse()
    except (MultiPartException, FormParserError, KeyError, ValueError, UnicodeError) as exc:
        raise BadRequest(f"malformed multipart body: {exc}") from None
    pairs: list[tuple[str, Any]] = []
    try:
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                data = await value.read()
                pairs.append(
                    (name, UploadedFile(value.filename or "", value.content_type or "", data))
                )
            else:
                pairs.append((name, value))
    finally:
        await form.close()
    return pairs


def for_validation(value: Any) -> Any:
    """The body as the JSON schema sees it: each uploaded file stands in as its file name."""
    if isinstance(value, UploadedFile):
        return value.filename or "upload"
    if isinstance(value, dict):
        return {key: for_validation(item) for key, item in value.items()}
    if isinstance(value, list):
        return [for_validation(item) for item in value]
    return value
