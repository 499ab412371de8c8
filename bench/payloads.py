"""Request bodies: 200 KB JPEGs, the multipart tune body, the prompt JSON."""

from __future__ import annotations

import io
import json
import random

from PIL import Image

BOUNDARY = "----astria-bench-boundary-7MA4YWxkTrZu0gW"
TARGET_JPEG_BYTES = 200_000
PROMPT_TEXT = "woman trekking in the alps, golden hour, 35mm"


def photo_like_jpeg(seed: int, target: int = TARGET_JPEG_BYTES, side: int = 1024) -> bytes:
    """A deterministic side x side JPEG of about ``target`` bytes: a gradient under
    upscaled noise, so it decodes like a photo of that size rather than like noise."""
    best = b""
    for scale in range(2, 33):
        rng = random.Random(seed)
        small = max(1, side // scale)
        noise = Image.frombytes("RGB", (small, small), rng.randbytes(small * small * 3))
        noise = noise.resize((side, side), Image.Resampling.BICUBIC)
        ramp = Image.linear_gradient("L").resize((side, side)).convert("RGB")
        out = io.BytesIO()
        Image.blend(ramp, noise, 0.5).save(out, "JPEG", quality=85)
        data = out.getvalue()
        if not best or abs(len(data) - target) < abs(len(best) - target):
            best = data
        if len(data) <= target:
            break
    return best


def small_jpeg(colour: tuple[int, int, int] = (200, 120, 90)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 64), colour).save(out, "JPEG")
    return out.getvalue()


def multipart(fields: list[tuple[str, str]], files: list[tuple[str, str, bytes]]) -> bytes:
    """A multipart/form-data body with ``BOUNDARY``: text fields, then (name, filename, JPEG)."""
    parts: list[bytes] = []
    for name, value in fields:
        head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
        parts.append(head.encode() + value.encode() + b"\r\n")
    for name, filename, data in files:
        head = (
            f"--{BOUNDARY}\r\n"
            f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        )
        parts.append(head.encode() + data + b"\r\n")
    parts.append(f"--{BOUNDARY}--\r\n".encode())
    return b"".join(parts)


MULTIPART_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


def faceid_tune_form(images: list[bytes], title: str = "John Doe - bench") -> bytes:
    """``POST /tunes`` as Astria's FaceID flow sends it: Rails bracket names, JPEG parts."""
    fields = [("tune[title]", title), ("tune[name]", "woman"), ("tune[model_type]", "faceid")]
    files = [("tune[images][]", f"face-{i}.jpg", data) for i, data in enumerate(images)]
    return multipart(fields, files)


def prompt_json(text: str = PROMPT_TEXT, callback: str | None = None) -> bytes:
    prompt: dict[str, object] = {"text": text, "num_images": 1}
    if callback:
        prompt["callback"] = callback
    return json.dumps({"prompt": prompt}).encode()


def faceid_tune_json(title: str) -> bytes:
    """A FaceID tune from an image URL: no upload to decode, the fastest way to seed."""
    tune = {
        "title": title,
        "name": "man",
        "model_type": "faceid",
        "image_urls": ["https://example.com/face.jpg"],
    }
    return json.dumps({"tune": tune}).encode()
