"""Image checks for uploads and the deterministic placeholder images the mock "generates".

Errors:

* InvalidImage (a ``ValueError``) — an upload is empty, not decodable, not JPEG/PNG/WebP,
  truncated, or too many pixels. Its message completes a sentence about the file
  ("… is not a decodable image"), so the caller can prefix the field or file name.

Placeholders are pure functions of their :class:`Placeholder` spec: colours come from a
BLAKE2b hash of the seed and index (never ``hash()``, which is salted per process), text
uses Pillow's built-in font, and the JPEG carries no EXIF or timestamps, so equal specs
give byte-identical files in any process.

Rendering is meant to cost about as much as encoding the JPEG itself, so nothing loops
over pixels in Python: the background is a cached greyscale ramp per size, coloured by a
palette. Text is never drawn by FreeType twice: each character is drawn once per size
(``_glyph``), each word put together once from its glyphs (``_word_mask``), and a line
is a list of word stamps inked straight onto the picture. Wrapped prompt text, captions
and fitted faces are cached by their inputs, so the images of one prompt (same text,
same face, different seeds) set the text once. Uploads are checked without decoding
their pixels where the format allows it (JPEG: see ``inspect_upload``).
"""

from __future__ import annotations

import colorsys
import hashlib
import io
import struct
from dataclasses import dataclass
from functools import lru_cache
from math import ceil
from typing import Any

from PIL import Image, ImageChops, ImageDraw, ImageFont, ImageOps

__all__ = [
    "ImageInfo",
    "InvalidImage",
    "Placeholder",
    "face_thumbnail",
    "inspect_upload",
    "render_placeholder",
]

# Pillow names phone JPEGs with an embedded second picture "MPO"; to the API they are JPEG.
_ACCEPTED_FORMATS = {"JPEG": "JPEG", "MPO": "JPEG", "PNG": "PNG", "WEBP": "WEBP"}
_EXPECTED = "JPEG, PNG or WebP expected"
# What Pillow's decoders raise on corrupt or truncated data (UnidentifiedImageError is an
# OSError); anything else escaping a decoder is a bug worth seeing.
_DECODE_ERRORS = (OSError, ValueError, EOFError, SyntaxError, struct.error, IndexError, TypeError)

_JPEG_QUALITY = 85
_WHITE = (255, 255, 255)
_CAPTION_GREY = (225, 225, 225)
_ELLIPSIS = "…"


class InvalidImage(ValueError):
    """An uploaded image the mock refuses; the message is shown to the API user."""


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """What an accepted upload is: its format (``JPEG``, ``PNG`` or ``WEBP``) and size."""

    format: str
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class Placeholder:
    """Everything a placeholder image shows; equal specs render byte-identical JPEGs."""

    width: int
    height: int
    seed: int
    index: int
    text: str
    caption: str
    face: bytes | None


# --- uploads ------------------------------------------------------------------------------


def _open(data: bytes, max_pixels: int) -> Image.Image:
    """Open ``data`` and check its header: an accepted format, a size within the limits.
    No pixel is decoded yet."""
    if not data:
        raise InvalidImage("is empty")
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise InvalidImage(f"has too many pixels to be decoded safely ({exc})") from exc
    except _DECODE_ERRORS as exc:
        raise InvalidImage(f"is not a decodable image ({_EXPECTED})") from exc
    if image.format not in _ACCEPTED_FORMATS:
        raise InvalidImage(f"is a {image.format} image ({_EXPECTED})")
    width, height = image.size
    # Checked on the header, before any pixel is decoded. Pillow's own limit is read, never
    # set: it is process-global. (Between its limit and twice that, Image.open has already
    # issued a DecompressionBombWarning; silencing it would need catch_warnings, which is
    # process-global too and unsafe in the render thread pool. The image is refused anyway.)
    pillow_limit = Image.MAX_IMAGE_PIXELS
    limit = max_pixels if pillow_limit is None else min(max_pixels, pillow_limit)
    if width * height > limit:
        raise InvalidImage(f"is {width}x{height} pixels, more than the {limit} allowed")
    if width < 1 or height < 1:
        raise InvalidImage("has no pixels")
    return image


def _decode(data: bytes, max_pixels: int, draft: tuple[int, int] | None = None) -> Image.Image:
    """Open, check and fully load ``data``; ``draft`` lets JPEG decode at a reduced scale."""
    image = _open(data, max_pixels)
    if draft is not None and image.format in ("JPEG", "MPO"):
        image.draft("RGB", draft)
    _load(image)
    return image


def _load(image: Image.Image) -> None:
    """Decode every pixel; a bomb or a broken stream is an :class:`InvalidImage`."""
    try:
        image.load()
    except Image.DecompressionBombError as exc:
        raise InvalidImage(f"has too many pixels to be decoded safely ({exc})") from exc
    except _DECODE_ERRORS as exc:
        raise InvalidImage(f"is truncated or corrupt ({exc})") from exc


# JPEG markers that stand alone (no length field): TEM, RST0-7, SOI.
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8), 0xD8})
# Start of frame: baseline, progressive, lossless, hierarchical, arithmetic (not DHT, JPG, DAC).
_JPEG_FRAMES = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_problem(data: bytes) -> str | None:
    """Why a JPEG stream is incomplete, or None when it is whole: the segments before the
    first scan are all within the data, a frame header comes before that scan, and an
    end-of-image marker follows it. A truncated upload (the common client bug) fails here.

    Inside the entropy-coded data of a scan a 0xFF byte is always followed by 0x00 or a
    restart marker, so the first ``FF D9`` after the scan's header is the end of the image
    (in a progressive JPEG, of its last scan); the data in between is not decoded. Bytes a
    decoder only warns about pass, as they do with Pillow (its JPEG decoder ignores
    libjpeg's warnings)."""
    size = len(data)
    position = 2  # after SOI, which Image.open has checked
    frame = False
    while True:
        position = data.find(b"\xff", position)  # extraneous bytes: libjpeg skips them
        while 0 <= position < size - 1 and data[position + 1] == 0xFF:
            position += 1  # fill bytes before a marker
        if position < 0 or position >= size - 1:
            return "ends before its image data"
        code = data[position + 1]
        position += 2
        if code == 0xD9:  # EOI
            return "has no image data"
        if code in _JPEG_STANDALONE:
            continue
        if position + 2 > size:
            return "ends inside a segment header"
        end = position + int.from_bytes(data[position : position + 2], "big")
        if end > size:
            return "ends inside a segment"
        if end < position + 2:
            return "has a segment of a bad length"
        if code in _JPEG_FRAMES:
            frame = True
        elif code == 0xDA:  # SOS: the first scan
            if not frame:
                return "has a scan before its frame header"
            if data.rfind(b"\xff\xd9", end) < 0:
                return "ends before its end-of-image marker"
            return None
        position = end


def inspect_upload(data: bytes, *, max_pixels: int = 40_000_000) -> ImageInfo:
    """Check an uploaded training or input image and say what it is.

    The header is checked first (format, and a size within ``max_pixels``). A PNG or WebP
    is then decoded in full; a JPEG (the usual upload: phone photos) is walked marker by
    marker to its end instead, which refuses what a full decode refuses in practice (a
    truncated or cut-off file) at a small fraction of the cost. Animated images are
    checked on their first frame.
    """
    image = _open(data, max_pixels)
    with image:
        info = ImageInfo(_ACCEPTED_FORMATS[image.format or ""], image.width, image.height)
        if info.format == "JPEG":
            problem = _jpeg_problem(data)
            if problem is not None:
                raise InvalidImage(f"is truncated or corrupt (the JPEG stream {problem})")
            return info
        _load(image)
    return info


def _to_rgb(image: Image.Image) -> Image.Image:
    """Flatten any mode to RGB; transparent areas become white rather than black."""
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*_WHITE, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _upright_square(data: bytes, size: int) -> Image.Image:
    """Decode, apply EXIF orientation, flatten to RGB, centre-crop and resize to size x size."""
    image = _decode(data, 40_000_000, draft=(size, size))
    upright = ImageOps.exif_transpose(image)
    return ImageOps.fit(_to_rgb(upright), (size, size), Image.Resampling.LANCZOS)


def face_thumbnail(data: bytes, size: int = 256) -> bytes:
    """A centre square crop of an upload as a size x size JPEG, upright and flattened as the
    placeholder renderer fits a face (which it does from the upload itself)."""
    if size < 1:
        raise ValueError(f"size must be positive, not {size}")
    out = io.BytesIO()
    _upright_square(data, size).save(out, "JPEG", quality=90)
    return out.getvalue()


# --- placeholders -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Layout:
    """Where things go on a width x height placeholder; a function of the size alone."""

    margin: int
    text_size: int
    small_size: int
    face_box: tuple[int, int, int]  # x, y, side
    text_top: int
    text_bottom: int
    caption_top: int


@lru_cache(maxsize=64)
def _layout(width: int, height: int, has_face: bool) -> _Layout:
    short = min(width, height)
    margin = max(2, short // 24)
    text_size = max(6, round(short / 19))
    small_size = max(5, round(short / 30))
    small_line = _line_height(small_size)
    label_bottom = margin + small_line
    side = round(short * 0.4)
    face_box = (0, 0, 0)
    text_top = label_bottom + margin
    if has_face and side >= 4:
        face_box = ((width - side) // 2, text_top, side)
        text_top += side + margin
    caption_top = height - margin - small_line
    return _Layout(
        margin=margin,
        text_size=text_size,
        small_size=small_size,
        face_box=face_box,
        text_top=text_top,
        text_bottom=caption_top - margin,
        caption_top=caption_top,
    )


@lru_cache(maxsize=64)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _line_height(size: int) -> int:
    return round(size * 1.25)


@dataclass(frozen=True, slots=True)
class _Glyph:
    """One character drawn once: its coverage trimmed to the ink (None for a blank one such
    as a space), where the ink starts from the pen at the top of a line, the pen advance."""

    mask: Image.Image | None
    dx: int
    dy: int
    advance: float


@lru_cache(maxsize=4096)
def _glyph(char: str, size: int) -> _Glyph:
    font = _font(size)
    advance = font.getlength(char)
    pad = size  # room for ink left of the pen or above the line (accents, "j")
    canvas = Image.new("L", (ceil(advance) + 3 * pad, _line_height(size) + 2 * pad))
    ImageDraw.Draw(canvas).text((pad, pad), char, font=font, fill=255)
    box = canvas.getbbox()
    if box is None:
        return _Glyph(None, 0, 0, advance)
    return _Glyph(canvas.crop(box), box[0] - pad, box[1] - pad, advance)


def _stamp(target: Image.Image, mask: Image.Image, x: int, y: int, fill: int = 255) -> None:
    """Ink ``mask`` onto the "L" image ``target`` at (x, y), clipped to its edges. Pillow's
    core call: the checks of ``Image.paste`` cost more than pasting a glyph."""
    target.im.paste(fill, (x, y, x + mask.width, y + mask.height), mask.im)


@lru_cache(maxsize=64)
def _advances(size: int) -> dict[str, float]:
    """The pen advance of each character drawn so far at ``size`` (filled by ``_advance``)."""
    return {}


def _advance(char: str, size: int) -> float:
    advances = _advances(size)
    found = advances.get(char)
    if found is None:
        found = advances[char] = _glyph(char, size).advance
    return found


def _text_width(text: str, size: int) -> float:
    """The pen advance of ``text``: the sum of its glyphs' advances. The built-in font has
    no kerning, so this is what ``font.getlength(text)`` measures."""
    advances = _advances(size)
    if all(char in advances for char in text):
        return sum(map(advances.__getitem__, text))
    return sum(_advance(char, size) for char in text)


def _truncate(text: str, size: int, width: int, *, cut: bool = False) -> str:
    """``text`` if it fits in ``width`` pixels (and ``cut`` is false), else the longest
    prefix that fits followed by "…"."""
    if not cut and _text_width(text, size) <= width:
        return text
    room = width - _text_width(_ELLIPSIS, size)
    fits, pen = 0, 0.0
    for position, char in enumerate(text):
        pen += _advance(char, size)
        if not char.isspace() and pen > room:
            break  # trailing blanks are stripped, so only ink can overflow
        fits = position + 1
    return text[:fits].rstrip() + _ELLIPSIS


def _wrap(text: str, size: int, width: int, max_lines: int) -> list[str]:
    """Greedy word wrap to ``width`` pixels; if it takes more than ``max_lines`` lines, the
    last line shown ends in "…"."""
    words = text.split()
    space = _advance(" ", size)
    lines: list[str] = []
    line, line_width = "", 0.0
    for position, word in enumerate(words):
        word_width = _word_mask(word, size)[2]
        candidate_width = line_width + space + word_width if line else word_width
        if candidate_width <= width:
            line = f"{line} {word}" if line else word
            line_width = candidate_width
            continue
        if line:
            lines.append(line)
        line, line_width = word, word_width
        while len(line) > 1 and line_width > width:  # a word wider than a line
            fits = max(1, len(_truncate(line, size, width)) - len(_ELLIPSIS))
            lines.append(line[:fits])
            line = line[fits:]
            line_width = _text_width(line, size)
        if len(lines) >= max_lines:
            rest = " ".join([*lines[max_lines - 1 :], line, *words[position + 1 :]])
            return [*lines[: max_lines - 1], _truncate(rest, size, width, cut=True)]
    if line:
        lines.append(line)
    return lines


@lru_cache(maxsize=1024)
def _word_mask(word: str, size: int) -> tuple[Image.Image, tuple[int, int], float]:
    """One word set once from cached glyphs: its mask trimmed to the ink, the trim offset
    from the pen at the top of the line, the pen advance."""
    glyphs = [_glyph(char, size) for char in word]
    advance = sum(glyph.advance for glyph in glyphs)
    pad = size
    canvas = Image.new("L", (ceil(advance) + 3 * pad, _line_height(size) + 2 * pad))
    pen = 0.0
    for glyph in glyphs:
        if glyph.mask is not None:
            _stamp(canvas, glyph.mask, pad + round(pen) + glyph.dx, pad + glyph.dy)
        pen += glyph.advance
    box = canvas.getbbox()
    if box is None:
        return Image.new("L", (1, 1)), (0, 0), advance
    return canvas.crop(box), (box[0] - pad, box[1] - pad), advance


@dataclass(frozen=True, slots=True)
class _Ink:
    """Set text, ready to ink onto a picture: each word's mask and where it goes (from the
    block's top left), and the colour. Inking word by word touches only the pixels near
    the words, and needs no block-sized mask or solid image."""

    stamps: tuple[tuple[Any, int, int, int, int], ...]
    """Each word: its mask's Pillow core and box (left, top, right, bottom)."""
    colour: tuple[int, int, int]

    @classmethod
    def of(cls, stamps: list[tuple[Image.Image, int, int]], colour: tuple[int, int, int]) -> _Ink:
        boxes = [(m.im, x, y, x + m.width, y + m.height) for m, x, y in stamps]
        return cls(tuple(boxes), colour)

    def paste_onto(self, image: Image.Image, x: int, y: int) -> None:
        paste, colour = image.im.paste, self.colour
        for mask, left, top, right, bottom in self.stamps:
            paste(colour, (x + left, y + top, x + right, y + bottom), mask)


def _line_stamps(
    line: str, size: int, top: int
) -> tuple[list[tuple[Image.Image, int, int]], float]:
    """Where the cached words of one line go, the pen starting at x = 0; and the line's
    width (what ``_text_width`` measures)."""
    space = _advance(" ", size)
    stamps: list[tuple[Image.Image, int, int]] = []
    pen = 0.0
    for word in line.split(" "):
        if word:
            mask, (dx, dy), advance = _word_mask(word, size)
            stamps.append((mask, round(pen) + dx, top + dy))
            pen += advance
        pen += space
    return stamps, pen - space


@lru_cache(maxsize=16)
def _text_ink(text: str, size: int, width: int, max_lines: int) -> tuple[_Ink | None, int]:
    """The prompt wrapped to ``width`` and set once, with the height of its lines; shared
    by the images of a prompt, which differ in seed but not in text."""
    if max_lines < 1 or width < 1:
        return None, 0
    lines = _wrap(text, size, width, max_lines)
    if not lines:
        return None, 0
    line_height = _line_height(size)
    stamps = [
        stamp
        for number, line in enumerate(lines)
        for stamp in _line_stamps(line, size, number * line_height)[0]
    ]
    return _Ink.of(stamps, _WHITE), line_height * len(lines)


@lru_cache(maxsize=64)
def _line_ink(text: str, size: int, width: int, colour: tuple[int, int, int]) -> _Ink | None:
    """One line of small text (caption, image label), truncated to ``width`` with "…".

    Captions differ per image only in a word or two (the seed), so the line is put together
    from cached words, and a new word from cached glyphs.
    """
    if width < 1:
        return None
    line = " ".join(text.split())
    stamps, line_width = _line_stamps(line, size, 0)
    if line_width > width:
        stamps, _ = _line_stamps(_truncate(line, size, width, cut=True), size, 0)
    return _Ink.of(stamps, colour) if stamps else None


_RAMPS = ("horizontal", "vertical", "diagonal", "radial")


@lru_cache(maxsize=16)
def _ramp(width: int, height: int, kind: str) -> Image.Image:
    """A greyscale 0-255 ramp of the given size and direction, built once per size."""
    if kind == "radial":
        return Image.radial_gradient("L").resize((width, height), Image.Resampling.BILINEAR)
    vertical = Image.linear_gradient("L").resize((width, height), Image.Resampling.BILINEAR)
    if kind == "vertical":
        return vertical
    horizontal = (
        Image.linear_gradient("L")
        .transpose(Image.Transpose.ROTATE_90)
        .resize((width, height), Image.Resampling.BILINEAR)
    )
    if kind == "horizontal":
        return horizontal
    return ImageChops.add(horizontal, vertical, scale=2.0)


@lru_cache(maxsize=16)
def _ramp_bytes(width: int, height: int, kind: str) -> bytes:
    """The ramp's pixels; each render maps a read-only image onto them instead of copying."""
    return _ramp(width, height, kind).tobytes()


def _colours(seed: int, index: int) -> tuple[str, bytes]:
    """The ramp direction and a 256-colour palette (three hues) for this seed and index."""
    digest = hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=16).digest()
    hue = digest[1] / 256
    stops: list[tuple[int, int, int]] = []
    for step in range(3):
        # Saturated, middle-dark colours: white text stays readable everywhere.
        step_hue = (hue + step * (0.12 + digest[2] / 1024)) % 1.0
        saturation = 0.45 + digest[3 + step] / 640
        value = 0.30 + digest[6 + step] / 850
        red, green, blue = colorsys.hsv_to_rgb(step_hue, saturation, value)
        stops.append((round(red * 255), round(green * 255), round(blue * 255)))
    strip = Image.new("RGB", (3, 1))
    strip.putdata(stops)
    palette = strip.resize((256, 1), Image.Resampling.BILINEAR).tobytes()
    return _RAMPS[digest[0] % len(_RAMPS)], palette


@lru_cache(maxsize=16)
def _face_disc(face: bytes, side: int) -> tuple[Image.Image, Image.Image]:
    """The face fitted to side x side inside a thin white ring, and the round mask to
    paste it with."""
    fitted = _upright_square(face, side)
    scale = 4  # draw the circles large and shrink them: antialiased edges
    big = side * scale
    inset = max(1, side // 48) * scale
    outer = Image.new("L", (big, big))
    ImageDraw.Draw(outer).ellipse((0, 0, big - 1, big - 1), fill=255)
    inner = Image.new("L", (big, big))
    ImageDraw.Draw(inner).ellipse((inset, inset, big - 1 - inset, big - 1 - inset), fill=255)
    ringed = Image.new("RGB", (side, side), _WHITE)
    ringed.paste(fitted, (0, 0), inner.resize((side, side), Image.Resampling.LANCZOS))
    return ringed, outer.resize((side, side), Image.Resampling.LANCZOS)


def render_placeholder(spec: Placeholder) -> bytes:
    """Render ``spec`` as a width x height JPEG: a seeded gradient, the face, the text."""
    width, height = spec.width, spec.height
    if width < 1 or height < 1:
        raise ValueError(f"placeholder size must be positive, not {width}x{height}")
    kind, palette = _colours(spec.seed, spec.index)
    pixels = _ramp_bytes(width, height, kind)
    canvas = Image.frombuffer("L", (width, height), pixels, "raw", "L", 0, 1)
    canvas.putpalette(palette)  # the palette is the canvas's own; the pixels stay shared
    image = canvas.convert("RGB")

    layout = _layout(width, height, spec.face is not None)
    x, y, side = layout.face_box
    if spec.face is not None and side:
        ringed, mask = _face_disc(spec.face, side)
        image.paste(ringed, (x, y), mask)

    margin = layout.margin
    inner = width - 2 * margin
    small = layout.small_size
    label = _line_ink(f"image {spec.index + 1}", small, inner, _WHITE)
    if label is not None:
        label.paste_onto(image, margin, margin)
    max_lines = (layout.text_bottom - layout.text_top) // _line_height(layout.text_size)
    text, text_height = _text_ink(" ".join(spec.text.split()), layout.text_size, inner, max_lines)
    if text is not None:
        # Centre the block in the space left for it: below the face, above the caption.
        top = layout.text_top + (layout.text_bottom - layout.text_top - text_height) // 2
        text.paste_onto(image, margin, top)
    caption = _line_ink(spec.caption, small, inner, _CAPTION_GREY)
    if caption is not None:
        caption.paste_onto(image, margin, layout.caption_top)

    out = io.BytesIO()
    image.save(out, "JPEG", quality=_JPEG_QUALITY)
    return out.getvalue()
