"""``/_mock/...``: our own control API, outside the contract (fuzzing never reaches it)."""

from __future__ import annotations

import mimetypes
import struct

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from .contract import spec_bytes
from .lifecycle import Lifecycle
from .serialize import dumps, prompt_json
from .services import Services

# A valid, empty safetensors file: an 8-byte header length and an empty JSON header.
EMPTY_SAFETENSORS = struct.pack("<Q", 2) + b"{}"
JSON_TYPE = "application/json; charset=utf-8"
IMMUTABLE = {"Cache-Control": "public, max-age=31536000, immutable"}


def _json(status: int, body: object) -> Response:
    return Response(dumps(body), status_code=status, media_type=JSON_TYPE)


def routes(services: Services, lifecycle: Lifecycle) -> list[BaseRoute]:
    spec = spec_bytes()

    async def health(_request: Request) -> Response:
        return _json(200, {"status": "ok"})

    async def openapi(_request: Request) -> Response:
        return Response(spec, media_type="application/yaml")

    async def file(request: Request) -> Response:
        key: str = request.path_params["key"]
        if key.endswith("/model.safetensors"):
            return Response(EMPTY_SAFETENSORS, media_type="application/octet-stream")
        data = services.files.get(key)
        if data is None:
            return _json(404, {"error": "Not found"})
        media_type = mimetypes.guess_type(key)[0] or "application/octet-stream"
        return Response(
            data, media_type=media_type, headers={"Cache-Control": "public, max-age=31536000"}
        )

    async def complete_prompt(request: Request) -> Response:
        prompt_id: int = request.path_params["id"]
        with services.store.begin() as tx:
            prompt = tx.prompt_by_id(prompt_id)
        if prompt is None:
            return _json(404, {"error": f"Prompt {prompt_id} not found"})
        lifecycle.finish_training(prompt["tune_id"])
        await lifecycle.complete(prompt_id)
        with services.store.begin() as tx:
            done = tx.prompt_by_id(prompt_id)
        assert done is not None
        return _json(200, prompt_json(done, services.settings.base_url))

    return [
        Route("/_mock/health", health, methods=["GET"]),
        Route("/openapi.yaml", openapi, methods=["GET"]),
        Route("/_mock/files/{key:path}", file, methods=["GET"]),
        Route("/_mock/prompts/{id:int}/complete", complete_prompt, methods=["POST"]),
    ]
