import io
import random
import struct
import time
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor

import pytest
from PIL import Image, ImageChops, ImageFile, ImageStat

from mockserver.images import (
    ImageInfo,
    InvalidImage,
    Placeholder,
    _font,
    _line_ink,
    _text_ink,
    _word_mask,
    _wrap,
    face_thumbnail,
    inspect_upload,
    render_placeholder,
)

CAPTION = "tune 690204 · euler_a · cfg 3 · seed 42"
PROMPT = "a photo of ohwx man in a spacesuit on the moon, cinematic lighting"


def encode(image, fmt, **params):
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def gradient(width, height):
    """A busy RGB image, so that a truncated file is missing real pixel data."""
    grey = Image.linear_gradient("L").resize((width, height))
    noise = Image.effect_noise((width, height), 64)
    return Image.merge("RGB", (grey, noise, grey.transpose(Image.Transpose.ROTATE_180)))


def png_header_only(width, height):
    """A PNG whose IHDR claims width x height, with almost no pixel data: a cheap bomb."""

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def spec(**changes):
    fields = {
        "width": 512,
        "height": 512,
        "seed": 42,
        "index": 0,
        "text": PROMPT,
        "caption": CAPTION,
        "face": None,
    }
    fields.update(changes)
    return Placeholder(**fields)


def decode(data):
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def solid_face(colour, size=(300, 400), fmt="JPEG"):
    return encode(Image.new("RGB", size, colour), fmt)


def coloured_region(image, channel):
    """The bounding box of the pixels strong in ``channel`` (0 red, 2 blue) and weak in the
    other two, or None."""
    strong = [255 if v > 170 else 0 for v in range(256)]
    weak = [255 if v < 80 else 0 for v in range(256)]
    masks = [
        band.point(strong if number == channel else weak)
        for number, band in enumerate(image.split())
    ]
    return ImageChops.multiply(ImageChops.multiply(masks[0], masks[1]), masks[2]).getbbox()


def mean_abs_difference(a, b):
    return sum(ImageStat.Stat(ImageChops.difference(a, b)).mean) / 3


# --- inspect_upload -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "mode", "expected"),
    [
        ("JPEG", "RGB", "JPEG"),
        ("JPEG", "L", "JPEG"),
        ("PNG", "RGB", "PNG"),
        ("PNG", "RGBA", "PNG"),
        ("PNG", "P", "PNG"),
        ("WEBP", "RGB", "WEBP"),
        ("WEBP", "RGBA", "WEBP"),
    ],
)
def test_inspect_accepts_jpeg_png_webp_and_reports_their_size(fmt, mode, expected):
    data = encode(gradient(37, 23).convert(mode), fmt)
    assert inspect_upload(data) == ImageInfo(format=expected, width=37, height=23)


def test_inspect_reports_a_phone_mpo_as_jpeg():
    frames = [gradient(40, 30), gradient(40, 30).transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    data = encode(frames[0], "MPO", save_all=True, append_images=frames[1:])
    assert decode(data).format == "MPO"
    assert inspect_upload(data) == ImageInfo("JPEG", 40, 30)


def test_inspect_rejects_an_empty_body():
    with pytest.raises(InvalidImage, match="empty"):
        inspect_upload(b"")


def test_inspect_rejects_random_bytes():
    data = random.Random(7).randbytes(4096)
    with pytest.raises(InvalidImage, match=r"not a decodable image \(JPEG, PNG or WebP expected\)"):
        inspect_upload(data)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_inspect_decodes_the_whole_image_so_a_truncated_one_is_rejected(fmt):
    data = encode(gradient(256, 256), fmt)
    truncated = data[: len(data) // 2]
    with pytest.raises(InvalidImage):
        inspect_upload(truncated)


def test_truncated_jpeg_still_has_a_readable_header():
    """The header alone says 256x256: only a full decode can tell the body is missing."""
    data = encode(gradient(256, 256), "JPEG")
    truncated = data[: len(data) // 2]
    assert Image.open(io.BytesIO(truncated)).size == (256, 256)
    with pytest.raises(InvalidImage, match="truncated"):
        inspect_upload(truncated)


@pytest.mark.parametrize(
    "params", [{}, {"progressive": True}, {"optimize": True}, {"restart_marker_blocks": 2}]
)
def test_a_jpeg_cut_anywhere_after_its_header_is_refused(params):
    data = encode(gradient(64, 48), "JPEG", **params)
    assert inspect_upload(data) == ImageInfo("JPEG", 64, 48)
    start = data.index(b"\xff\xda")  # the first scan
    for cut in [*range(start, len(data), 7), len(data) - 1]:
        with pytest.raises(InvalidImage, match=r"truncated|not a decodable image"):
            inspect_upload(data[:cut])


def test_a_jpeg_is_checked_without_decoding_its_pixels(monkeypatch):
    """A JPEG's stream is walked to its end-of-image marker; PNG and WebP are decoded."""

    def no_decoding(_image):
        raise AssertionError("decoded")

    jpeg_data, png_data = encode(gradient(80, 60), "JPEG"), encode(gradient(80, 60), "PNG")
    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    assert inspect_upload(jpeg_data) == ImageInfo("JPEG", 80, 60)
    with pytest.raises(AssertionError, match="decoded"):
        inspect_upload(png_data)


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF"])
def test_inspect_rejects_other_formats_by_name(fmt):
    data = encode(gradient(32, 32), fmt)
    with pytest.raises(InvalidImage, match=rf"is a {fmt} image \(JPEG, PNG or WebP expected\)"):
        inspect_upload(data)


@pytest.mark.parametrize(
    "size",
    [
        (20_000, 20_000),  # above twice Pillow's limit: Pillow itself refuses to open it
        (8_000, 8_000),  # 64 MP: below Pillow's limit, above ours (40 MP)
    ],
)
def test_inspect_rejects_a_bomb_from_its_header_without_decoding_it(size):
    data = png_header_only(*size)
    pillow_limit = Image.MAX_IMAGE_PIXELS
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(InvalidImage, match="pixels") as caught:
            inspect_upload(data)
    assert time.perf_counter() - started < 1.0
    assert "truncated" not in str(caught.value)  # refused before the missing data was read
    assert pillow_limit == Image.MAX_IMAGE_PIXELS


def test_inspect_max_pixels_is_the_callers_limit():
    data = encode(gradient(100, 100), "PNG")
    with pytest.raises(InvalidImage, match="100x100 pixels, more than the 9999 allowed"):
        inspect_upload(data, max_pixels=9_999)
    assert inspect_upload(data, max_pixels=10_000) == ImageInfo("PNG", 100, 100)


# --- render_placeholder -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("width", "height"),
    [(64, 64), (512, 512), (768, 1344), (1344, 768), (2048, 2048), (8, 8)],
)
@pytest.mark.parametrize("with_face", [False, True])
def test_placeholder_is_a_jpeg_of_exactly_the_requested_size(width, height, with_face):
    face = face_thumbnail(solid_face((200, 0, 0))) if with_face else None
    data = render_placeholder(spec(width=width, height=height, face=face))
    image = decode(data)
    assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (width, height))
    assert "exif" not in image.info
    assert not image.getexif()


def test_equal_specs_give_identical_bytes():
    face = face_thumbnail(solid_face((0, 160, 40)))
    first = render_placeholder(spec(face=face))
    render_placeholder(spec(seed=1, text="something else", caption="other"))
    again = render_placeholder(spec(face=bytes(face)))  # an equal spec, not the same object
    assert again == first


def test_rendering_in_threads_gives_the_same_bytes():
    """The server renders in a thread pool; shared caches and fonts must not mix images."""
    specs = [
        spec(width=256, height=256, seed=seed, text=f"thread test {seed} " * 4, caption=f"c {seed}")
        for seed in range(24)
    ]
    with ThreadPoolExecutor(max_workers=8) as pool:
        concurrent = list(pool.map(render_placeholder, specs))
    for cache in (_text_ink, _line_ink, _word_mask):
        cache.cache_clear()
    assert concurrent == [render_placeholder(one) for one in specs]


@pytest.mark.parametrize(("field", "other"), [("seed", 43), ("index", 1)])
def test_another_seed_or_index_looks_different(field, other):
    one = decode(render_placeholder(spec()))
    two = decode(render_placeholder(spec(**{field: other})))
    assert mean_abs_difference(one, two) > 10  # the whole background changed, not a few pixels


def test_another_prompt_shows_other_text():
    one = render_placeholder(spec(text="a red car"))
    two = render_placeholder(spec(text="a blue boat"))
    assert one != two
    assert ImageChops.difference(decode(one), decode(two)).getbbox() is not None


def test_the_caption_and_text_are_drawn():
    plain = decode(render_placeholder(spec(text="", caption="")))
    with_text = decode(render_placeholder(spec()))
    changed = ImageChops.difference(plain, with_text).getbbox()
    assert changed is not None
    left, _, right, bottom = changed
    assert bottom > 512 * 0.9  # the caption line near the bottom edge
    assert right - left > 512 / 2  # a line of prompt text across most of the width


def test_a_long_prompt_is_wrapped_to_the_width_and_ends_with_an_ellipsis():
    font = _font(24)
    lines = _wrap("spacesuit " * 200, 24, 300, 4)
    assert len(lines) == 4
    assert lines[-1].endswith("…")
    assert all(font.getlength(line) <= 300 for line in lines)
    unbroken = _wrap("x" * 500, 24, 300, 3)  # one word wider than a line is cut
    assert len(unbroken) == 3
    assert all(font.getlength(line) <= 300 for line in unbroken)
    assert _wrap("a short prompt", 24, 300, 4) == ["a short prompt"]


def test_a_very_long_prompt_still_renders():
    image = decode(render_placeholder(spec(text="word " * 5000, caption="c" * 1000)))
    assert image.size == (512, 512)


def reddish(pixel):
    r, g, b = pixel
    return r > 170 and g < 80 and b < 80


def bluish(pixel):
    r, g, b = pixel
    return b > 170 and r < 80 and g < 80


@pytest.mark.parametrize(
    ("colour", "channel", "test"), [((220, 20, 20), 0, reddish), ((20, 20, 220), 2, bluish)]
)
@pytest.mark.parametrize(("width", "height"), [(512, 512), (768, 1344)])
def test_the_face_is_pasted_in_the_upper_part(colour, channel, test, width, height):
    face = face_thumbnail(solid_face(colour))
    without = decode(render_placeholder(spec(width=width, height=height)))
    assert coloured_region(without, channel) is None  # the background never has that colour

    image = decode(render_placeholder(spec(width=width, height=height, face=face)))
    box = coloured_region(image, channel)
    assert box is not None
    left, top, right, bottom = box
    short = min(width, height)
    assert 0.3 * short < right - left < 0.5 * short  # about 40% of the short side
    assert abs((left + right) / 2 - width / 2) < width * 0.05  # centred
    assert bottom < height * 0.6  # in the upper part
    quarter_w, quarter_h = (right - left) // 4, (bottom - top) // 4
    inner = image.crop((left + quarter_w, top + quarter_h, right - quarter_w, bottom - quarter_h))
    mean = tuple(round(channel) for channel in ImageStat.Stat(inner).mean)
    assert test(mean)


def test_an_undecodable_face_is_refused():
    with pytest.raises(InvalidImage):
        render_placeholder(spec(face=b"not an image"))


# --- face_thumbnail -----------------------------------------------------------------------


@pytest.mark.parametrize("size", [256, 64, 300])
@pytest.mark.parametrize("source", [(640, 480), (480, 640), (100, 100)])
def test_face_thumbnail_is_a_square_jpeg_of_the_given_size(size, source):
    thumbnail = decode(face_thumbnail(encode(gradient(*source), "JPEG"), size))
    assert (thumbnail.format, thumbnail.size) == ("JPEG", (size, size))


def test_face_thumbnail_default_size_and_determinism():
    data = encode(gradient(640, 480), "PNG")
    assert decode(face_thumbnail(data)).size == (256, 256)
    assert face_thumbnail(data) == face_thumbnail(data)


def test_face_thumbnail_honours_exif_orientation():
    """Stored sideways (left red, right blue) with orientation 6: upright, red is on top."""
    image = Image.new("RGB", (200, 100), (220, 20, 20))
    image.paste((20, 20, 220), (100, 0, 200, 100))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    data = encode(image, "JPEG", exif=exif.tobytes())

    thumbnail = decode(face_thumbnail(data, 64))
    assert reddish(thumbnail.getpixel((32, 8)))
    assert bluish(thumbnail.getpixel((32, 56)))


def test_face_thumbnail_crops_the_centre():
    image = Image.new("RGB", (300, 100), (20, 20, 220))
    image.paste((220, 20, 20), (100, 0, 200, 100))  # the centre square is red
    thumbnail = decode(face_thumbnail(encode(image, "PNG"), 32))
    assert reddish(tuple(round(c) for c in ImageStat.Stat(thumbnail).mean))


def test_face_thumbnail_puts_transparency_on_white():
    data = encode(Image.new("RGBA", (50, 50), (0, 0, 0, 0)), "PNG")
    assert min(ImageStat.Stat(decode(face_thumbnail(data, 16))).mean) > 240


@pytest.mark.parametrize("data", [b"", b"\x00" * 100, encode(gradient(20, 20), "GIF")])
def test_face_thumbnail_refuses_what_is_not_an_accepted_image(data):
    with pytest.raises(InvalidImage):
        face_thumbnail(data)
