"""A webhook receiver that timestamps each arrival, in a process of its own.

``python bench/receiver.py --port P --out FILE`` answers every request ``204`` (keep-alive)
and appends one JSON line per request to ``FILE``: ``{"t": <time.time() when the whole
request was read>, "path": ..., "body": <the body as text>}``. It prints ``ready`` once it
listens. Plain asyncio streams, so a delivery costs the receiver next to nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import TextIO

NO_CONTENT = b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"


async def serve_connection(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, out: TextIO
) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            body = await reader.readexactly(length) if length else b""
            arrived = time.time()
            path = lines[0].split(" ")[1] if " " in lines[0] else ""
            record = {"t": arrived, "path": path, "body": body.decode("utf-8", "replace")}
            out.write(json.dumps(record) + "\n")
            out.flush()
            writer.write(NO_CONTENT)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def serve(host: str, port: int, path: str) -> None:
    with open(path, "a", encoding="utf-8") as out:
        server = await asyncio.start_server(
            lambda r, w: serve_connection(r, w, out), host, port, backlog=1024
        )
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        async with server:
            await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description="timestamping webhook receiver")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port, args.out))


if __name__ == "__main__":
    main()
