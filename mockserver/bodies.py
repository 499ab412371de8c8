"""Request bodies in JSON, multipart or urlencoded, read within a size limit and decoded
into one nested dict of the shape the operation's JSON schema describes."""

from __future__ import annotations

import codecs
import json
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import orjson
from python_multipart import MultipartParser
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import parse_options_header
from starlette.formparsers import MultiPartException
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


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"request body is larger than the limit of {limit} bytes")


def _check_declared(request: Request, limit: int) -> None:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)


async def limited_stream(request: Request, limit: int) -> AsyncIterator[bytes]:
    """The body as it arrives, or a 413 as soon as it is known to pass ``limit`` bytes."""
    _check_declared(request, limit)
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        yield chunk


async def read_limited(request: Request, limit: int) -> bytes:
    """The whole body, or a 413 as soon as it is known to pass ``limit`` bytes (the loop of
    ``limited_stream`` without its generator: a JSON body is mostly one chunk)."""
    _check_declared(request, limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def decode_body(request: Request, accepted: tuple[str, ...], limit: int) -> Body:
    header = request.headers.get("content-type", "")
    media_type = header.split(";", 1)[0].strip().lower()
    if media_type == MULTIPART and MULTIPART in accepted:
        chunks = limited_stream(request, limit)
        return Body(decode_pairs(await _multipart_pairs(chunks, header, limit)), MULTIPART)
    raw = await read_limited(request, limit)
    if not raw and not media_type:
        return Body({}, None)
    if media_type not in accepted:
        wanted = ", ".join(accepted) or "no body"
        raise UnsupportedMediaType(
            f"content type {media_type or 'none'!r} is not accepted; send {wanted}"
        )
    if media_type == JSON:
        return Body(_json_object(raw), JSON)
    return Body(decode_pairs(_urlencoded_pairs(raw)), URLENCODED)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
"""What ``json.loads(raw, parse_constant=_reject_constant)`` builds on each call."""


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        # What orjson refuses (other encodings than UTF-8, NaN, integers beyond 64 bits,
        # lone surrogates) is decoded, or refused with its message, as json.loads does.
        try:
            value = _DECODER.decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))
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


MAX_FILES = MAX_FIELDS = 1000
"""Starlette's limits on the parts of one form."""


def _safe_decode(src: bytes, codec: str) -> str:
    """A name or field as Starlette decodes it: in the form's charset, else Latin-1."""
    try:
        return src.decode(codec)
    except (UnicodeDecodeError, LookupError):
        return src.decode("latin-1")


@dataclass(slots=True)
class _Parts:
    """python-multipart's callbacks, collecting each part in memory.

    The body is in memory already, so this does what Starlette's ``MultiPartParser`` does
    (the same tokenizer, limits, decoding and messages) but without a spooled temporary
    file per upload, the awaited writes into it and the copy read back out of it.
    """

    charset: str
    max_part_size: int
    pairs: list[tuple[str, Any]] = field(default_factory=list)
    files: int = 0
    fields: int = 0
    header_name: bytes = b""
    header_value: bytes = b""
    disposition: bytes = b""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    name: str = ""
    upload: UploadedFile | None = None
    chunks: list[memoryview] = field(default_factory=list)
    size: int = 0

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self.on_part_begin,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
        }

    def on_part_begin(self) -> None:
        self.disposition, self.headers, self.name, self.upload = b"", [], "", None
        self.chunks, self.size = [], 0

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.upload is None and self.size + end - start > self.max_part_size:
            limit = int(self.max_part_size / 1024)
            raise MultiPartException(f"Part exceeded maximum size of {limit}KB.")
        self.size += end - start
        self.chunks.append(memoryview(data)[start:end])  # copied once, when the part ends

    def on_part_end(self) -> None:
        data = b"".join(self.chunks)
        if self.upload is None:
            self.pairs.append((self.name, _safe_decode(data, self.charset)))
        else:
            upload = self.upload
            self.pairs.append((self.name, UploadedFile(upload.filename, upload.content_type, data)))

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        name = self.header_name.lower()
        if name == b"content-disposition":
            self.disposition = self.header_value
        self.headers.append((name, self.header_value))
        self.header_name = self.header_value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self.disposition)
        try:
            self.name = _safe_decode(options[b"name"], self.charset)
        except KeyError:
            message = 'The Content-Disposition header field "name" must be provided.'
            raise MultiPartException(message) from None
        if b"filename" in options:
            self.files += 1
            if self.files > MAX_FILES:
                message = f"Too many files. Maximum number of files is {MAX_FILES}."
                raise MultiPartException(message)
            content_type = next((v for k, v in self.headers if k == b"content-type"), b"")
            filename = _safe_decode(options[b"filename"], self.charset)
            self.upload = UploadedFile(filename, content_type.decode("latin-1"), b"")
        else:
            self.fields += 1
            if self.fields > MAX_FIELDS:
                message = f"Too many fields. Maximum number of fields is {MAX_FIELDS}."
                raise MultiPartException(message)
            self.upload = None


async def _multipart_pairs(
    chunks: AsyncIterable[bytes], content_type: str, max_part_size: int
) -> list[tuple[str, Any]]:
    """The parts of a multipart body, in order: text fields as strings, files as
    :class:`UploadedFile`; a malformed body is a 400. The body is parsed as it arrives,
    never held whole beside its parts."""
    try:
        _, params = parse_options_header(content_type)
        charset = params.get(b"charset", b"utf-8").decode("latin-1")
        try:
            charset = codecs.lookup(charset).name
        except LookupError:
            charset = "latin-1"
        if b"boundary" not in params:
            raise MultiPartException("Missing boundary in multipart.")
        parts = _Parts(charset, max_part_size)
        parser = MultipartParser(params[b"boundary"], parts.callbacks())  # type: ignore[arg-type]
        try:
            async for chunk in chunks:
                parser.write(bytes(chunk))  # immutable (no copy for bytes): parts view it
            parser.finalize()
        except FormParserError as exc:
            raise MultiPartException("Invalid multipart data.") from exc
    except (MultiPartException, FormParserError, KeyError, ValueError, UnicodeError) as exc:
        raise BadRequest(f"malformed multipart body: {exc}") from None
    return parts.pairs


def for_validation(value: Any) -> Any:
    """The body as the JSON schema sees it: each uploaded file stands in as its file name."""
    if isinstance(value, UploadedFile):
        return value.filename or "upload"
    if isinstance(value, dict):
        return {key: for_validation(item) for key, item in value.items()}
    if isinstance(value, list):
        return [for_validation(item) for item in value]
    return value
