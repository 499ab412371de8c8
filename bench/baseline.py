"""The bare baseline: Starlette on uvicorn (uvloop + httptools) answering captured bytes.

Run as a script, not imported by the mock: ``python bench/baseline.py --port P --bodies DIR``.
``DIR`` holds the answers captured from the mock (``get_tune.json``, ``create_prompt.json``,
``create_tune.json``, ``list_tunes.json``); each route answers its file's bytes as they are,
so the baseline sends what the mock sends and does nothing else:

* ``GET /tunes/{id}`` and ``GET /tunes``: the captured bytes;
* ``POST /tunes/{id}/prompts``: reads the body, answers the captured bytes (201);
* ``POST /tunes``: parses the multipart form with Starlette (files included), answers the
  captured bytes (201);
* ``GET /_mock/health``: ready.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

JSON = "application/json; charset=utf-8"
BODIES = ("get_tune", "create_prompt", "create_tune", "list_tunes")
MAX_PART_SIZE = 64 * 1024 * 1024


def create_baseline(bodies: dict[str, bytes]) -> Starlette:
    get_tune = bodies.get("get_tune", b"{}")
    created_prompt = bodies.get("create_prompt", b"{}")
    created_tune = bodies.get("create_tune", b"{}")
    list_tunes = bodies.get("list_tunes", b"[]")

    async def health(_request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type=JSON)

    async def tune(_request: Request) -> Response:
        return Response(get_tune, media_type=JSON)

    async def tunes(_request: Request) -> Response:
        return Response(list_tunes, media_type=JSON)

    async def prompt(request: Request) -> Response:
        await request.body()
        return Response(created_prompt, status_code=201, media_type=JSON)

    async def create_tune(request: Request) -> Response:
        async with request.form(max_part_size=MAX_PART_SIZE) as form:
            for value in form.values():
                if not isinstance(value, str):
                    await value.read()
        return Response(created_tune, status_code=201, media_type=JSON)

    return Starlette(
        routes=[
            Route("/_mock/health", health, methods=["GET"]),
            Route("/tunes/{id:int}", tune, methods=["GET"]),
            Route("/tunes", tunes, methods=["GET"]),
            Route("/tunes", create_tune, methods=["POST"]),
            Route("/tunes/{id:int}/prompts", prompt, methods=["POST"]),
        ]
    )


def load_bodies(directory: Path | None) -> dict[str, bytes]:
    if directory is None:
        return {}
    return {
        name: path.read_bytes() for name in BODIES if (path := directory / f"{name}.json").exists()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bodies", type=Path, default=None, help="directory of captured answers")
    args = parser.parse_args()
    app = create_baseline(load_bodies(args.bodies))
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        lifespan="off",
    )


if __name__ == "__main__":
    main()
