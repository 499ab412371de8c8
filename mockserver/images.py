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
palette; wrapped prompt text, captions and fitted faces are cached by their inputs, so
the images of one prompt (same text, same face, different seeds) render the text once.
"""

from __future__ import annotations

import colorsys
import hashlib
import io
import struct
from dataclasses import dataclass
from functools import lru_cache
from math import ceil

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


def _decode(data: bytes, max_pixels: int, draft: tuple[int, int] | None = None) -> Image.Image:
    """Open, check and fully load ``data``; ``draft`` lets JPEG decode at a reduced scale."""
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
    if draft is not None and image.format in ("JPEG", "MPO"):
        image.draft("RGB", draft)
    try:
        image.load()
    except Image.DecompressionBombError as exc:
        raise InvalidImage(f"has too many pixels to be decoded safely ({exc})") from exc
    except _DECODE_ERRORS as exc:
        raise InvalidImage(f"is truncated or corrupt ({exc})") from exc
    return image


def inspect_upload(data: bytes, *, max_pixels: int = 40_000_000) -> ImageInfo:
    """Check an uploaded training or input image and say what it is.

    The whole image is decoded (a valid header on a truncated body is refused), but only
    after its header size passed ``max_pixels``. Animated images are checked on their
    first frame.
    """
    image = _decode(data, max_pixels)
    with image:
        return ImageInfo(_ACCEPTED_FORMATS[image.format or ""], image.width, image.height)


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
    """A centre square crop of an upload as a size x size JPEG: the face stored once per tune."""
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


def _width(font: ImageFont.FreeTypeFont | ImageFont.ImageFont, text: str) -> float:
    return font.getlength(text)


def _truncate(
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont, text: str, width: int, *, cut: bool = False
) -> str:
    """``text`` if it fits in ``width`` pixels (and ``cut`` is false), else the longest
    prefix that fits followed by "…"."""
    if not cut and _width(font, text) <= width:
        return text
    low, high = 0, len(text)  # binary search on the prefix length
    while low < high:
        mid = (low + high + 1) // 2
        if _width(font, text[:mid].rstrip() + _ELLIPSIS) <= width:
            low = mid
        else:
            high = mid - 1
    return text[:low].rstrip() + _ELLIPSIS


def _wrap(text: str, size: int, width: int, max_lines: int) -> list[str]:
    """Greedy word wrap to ``width`` pixels; if it takes more than ``max_lines`` lines, the
    last line shown ends in "…"."""
    font = _font(size)
    words = text.split()
    lines: list[str] = []
    line = ""
    for position, word in enumerate(words):
        candidate = f"{line} {word}" if line else word
        if _width(font, candidate) <= width:
            line = candidate
            continue
        if line:
            lines.append(line)
        line = word
        while len(line) > 1 and _width(font, line) > width:  # a word wider than a line
            fits = max(1, len(_truncate(font, line, width)) - len(_ELLIPSIS))
            lines.append(line[:fits])
            line = line[fits:]
        if len(lines) >= max_lines:
            rest = " ".join([*lines[max_lines - 1 :], line, *words[position + 1 :]])
            return [*lines[: max_lines - 1], _truncate(font, rest, width, cut=True)]
    if line:
        lines.append(line)
    return lines


@dataclass(frozen=True, slots=True)
class _Ink:
    """Drawn text ready to paste: a solid colour image, its alpha mask, where it starts."""

    solid: Image.Image
    mask: Image.Image
    offset: tuple[int, int]

    def paste_onto(self, image: Image.Image, x: int, y: int) -> None:
        # Pasting an image through a mask is about twice as fast as pasting a fill colour.
        image.paste(self.solid, (x + self.offset[0], y + self.offset[1]), self.mask)


def _ink(mask: Image.Image, colour: tuple[int, int, int]) -> _Ink | None:
    """Trim ``mask`` to its drawn pixels (nothing drawn: None) and pair it with ``colour``."""
    box = mask.getbbox()
    if box is None:
        return None
    trimmed = mask.crop(box)
    return _Ink(Image.new("RGB", trimmed.size, colour), trimmed, (box[0], box[1]))


@lru_cache(maxsize=16)
def _text_ink(text: str, size: int, width: int, max_lines: int) -> tuple[_Ink | None, int]:
    """The prompt wrapped to ``width`` and drawn once, with the height of its lines; shared
    by the images of a prompt, which differ in seed but not in text."""
    if max_lines < 1 or width < 1:
        return None, 0
    lines = _wrap(text, size, width, max_lines)
    if not lines:
        return None, 0
    line_height = _line_height(size)
    mask = Image.new("L", (width, line_height * len(lines)))
    draw = ImageDraw.Draw(mask)
    font = _font(size)
    for number, line in enumerate(lines):
        draw.text((0, number * line_height), line, font=font, fill=255)
    return _ink(mask, _WHITE), mask.height


@lru_cache(maxsize=1024)
def _word_mask(word: str, size: int) -> tuple[Image.Image, tuple[int, int], float]:
    """One word drawn once: its mask trimmed to the ink, the trim offset, the pen advance."""
    font = _font(size)
    advance = _width(font, word)
    mask = Image.new("L", (max(1, ceil(advance) + size), _line_height(size)))
    ImageDraw.Draw(mask).text((0, 0), word, font=font, fill=255)
    box = mask.getbbox() or (0, 0, 1, 1)
    return mask.crop(box), (box[0], box[1]), advance


@lru_cache(maxsize=64)
def _line_ink(text: str, size: int, width: int, colour: tuple[int, int, int]) -> _Ink | None:
    """One line of small text (caption, image label), truncated to ``width`` with "…".

    Captions differ per image only in a word or two (the seed), so a line that fits is put
    together from cached words; only a line too long to fit is drawn whole.
    """
    if width < 1:
        return None
    font = _font(size)
    words = text.split()
    line = Image.new("L", (width, _line_height(size)))
    glyphs = [_word_mask(word, size) for word in words]
    space = _width(font, " ")
    if sum(advance for *_, advance in glyphs) + space * (len(glyphs) - 1) > width:
        line_text = _truncate(font, " ".join(words), width, cut=True)
        ImageDraw.Draw(line).text((0, 0), line_text, font=font, fill=255)
        return _ink(line, colour)
    pen = 0.0
    for mask, (dx, dy), advance in glyphs:
        line.paste(mask, (round(pen) + dx, dy))
        pen += advance + space
    return _ink(line, colour)


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
    canvas = _ramp(width, height, kind).copy()
    canvas.putpalette(palette)
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
