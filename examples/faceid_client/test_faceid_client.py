"""The client's own tests: one fixture, `astria_mock`, gives them the mock and contract checks."""

import io

import httpx
from faceid_client import FaceIdClient
from PIL import Image


def photo() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 64), (180, 140, 120)).save(out, "JPEG")
    return out.getvalue()


def test_portraits_of_an_identity(astria_mock):
    client = FaceIdClient(astria_mock.url, astria_mock.api_key)
    identity = client.create_identity("user-42", [photo()])
    prompt_id = client.portraits(identity, "trekking in the alps")
    images = client.wait_for_images(prompt_id)
    assert len(images) == 2
    assert httpx.get(images[0]).headers["content-type"] == "image/jpeg"
