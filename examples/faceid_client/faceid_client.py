"""A small Astria FaceID client, as an app would write it (the example the plugin tests)."""

from __future__ import annotations

import time
from typing import Any

import httpx

GALLERY_CHECKPOINT = 690204  # Realistic Vision v5.1


class FaceIdClient:
    def __init__(self, base_url: str, api_key: str) -> None:
        self.http = httpx.Client(
            base_url=base_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=30
        )

    def create_identity(self, title: str, photos: list[bytes], callback: str | None = None) -> int:
        """A FaceID tune from face photos; it is ready at once."""
        data = {"tune[title]": title, "tune[name]": "woman", "tune[model_type]": "faceid"}
        if callback:
            data["tune[callback]"] = callback
        files = [
            ("tune[images][]", (f"{i}.jpg", photo, "image/jpeg")) for i, photo in enumerate(photos)
        ]
        response = self.http.post("/tunes", data=data, files=files)
        response.raise_for_status()
        return int(response.json()["id"])

    def portraits(self, identity: int, scene: str, count: int = 2) -> int:
        """Prompt the gallery checkpoint with the FaceID adapter."""
        prompt = {"text": f"<faceid:{identity}:1> {scene}", "num_images": count, "cfg_scale": 3}
        response = self.http.post(f"/tunes/{GALLERY_CHECKPOINT}/prompts", json={"prompt": prompt})
        response.raise_for_status()
        return int(response.json()["id"])

    def wait_for_images(self, prompt_id: int, timeout: float = 30) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            prompt: dict[str, Any] = self.http.get(f"/prompts/{prompt_id}.json").json()
            if prompt.get("user_error"):
                raise RuntimeError(prompt["user_error"])
            if prompt["images"]:
                return list(prompt["images"])
            time.sleep(0.2)
        raise TimeoutError(f"prompt {prompt_id} has no images after {timeout} s")
