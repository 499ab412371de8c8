"""The fallback load generator, used when wrk is not installed: asyncio, keep-alive HTTP/1.1.

Run as a separate process (``python bench/pyload.py URL ...``); prints one JSON line with
the same fields the wrk script prints: requests, duration, latency percentiles, errors.
Each connection sends one request at a time, like wrk. ``--requests N`` stops after N
answers instead of after ``--duration``; ``--vary`` replaces ``{n}`` in the body with a
counter, so each request differs (for example each prompt's text).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


class Stats:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.status_errors = 0
        self.io_errors = 0
        self.sent = 0


def build_request(
    method: str, target: str, host: str, headers: list[str], body: bytes
) -> tuple[bytes, bytes]:
    """The request head (without Content-Length) and its body."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    lines += headers
    head = ("\r\n".join(lines) + "\r\n").encode()
    return head, body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one answer; returns its status and whether the server keeps the connection."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = 0
    chunked = False
    keep = True
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        value = value.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "transfer-encoding" and "chunked" in value:
            chunked = True
        elif name == "connection" and value == "close":
            keep = False
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status, keep


async def worker(
    host: str,
    port: int,
    head: bytes,
    body: bytes,
    vary: bool,
    deadline: float,
    budget: list[int],
    stats: Stats,
) -> None:
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    while time.perf_counter() < deadline and budget[0] != 0:
        if budget[0] > 0:
            budget[0] -= 1
        stats.sent += 1
        payload = body.replace(b"{n}", str(stats.sent).encode()) if vary else body
        request = head + f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            assert reader is not None
            started = time.perf_counter()
            writer.write(request)
            status, keep = await read_response(reader)
            stats.latencies.append(time.perf_counter() - started)
            if not 200 <= status < 400:
                stats.status_errors += 1
            if not keep:
                writer.close()
                writer = None
        except (OSError, asyncio.IncompleteReadError, ValueError):
            stats.io_errors += 1
            if writer is not None:
                writer.close()
            writer = None
            await asyncio.sleep(0.01)
    if writer is not None:
        writer.close()


def percentile(values: list[float], share: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))
    return ordered[index]


async def run(args: argparse.Namespace) -> dict[str, float]:
    url = urlsplit(args.url)
    host = url.hostname or "127.0.0.1"
    port = url.port or 80
    target = url.path + (f"?{url.query}" if url.query else "")
    body = Path(args.body).read_bytes() if args.body else b""
    head, body = build_request(args.method, target, url.netloc, args.header, body)
    stats = Stats()
    budget = [args.requests if args.requests else -1]
    started = time.perf_counter()
    deadline = started + (args.duration if not args.requests else 3600.0)
    await asyncio.gather(
        *(
            worker(host, port, head, body, args.vary, deadline, budget, stats)
            for _ in range(args.connections)
        )
    )
    elapsed = time.perf_counter() - started
    done = len(stats.latencies)
    return {
        "requests": done,
        "duration_s": elapsed,
        "rps": done / elapsed if elapsed else 0.0,
        "p50_ms": percentile(stats.latencies, 0.50) * 1000,
        "p90_ms": percentile(stats.latencies, 0.90) * 1000,
        "p99_ms": percentile(stats.latencies, 0.99) * 1000,
        "max_ms": max(stats.latencies, default=0.0) * 1000,
        "status_errors": stats.status_errors,
        "io_errors": stats.io_errors,
    }


def _runner() -> Callable[[Coroutine[Any, Any, dict[str, float]]], dict[str, float]]:
    """uvloop's runner (uvicorn[standard] installs it), else plain asyncio."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run


def main() -> None:
    parser = argparse.ArgumentParser(description="asyncio HTTP/1.1 load generator")
    parser.add_argument("url")
    parser.add_argument("--method", default="GET")
    parser.add_argument("--header", action="append", default=[], help="'Name: value'")
    parser.add_argument("--body", default=None, help="file with the request body")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--requests", type=int, default=0, help="stop after N answers")
    parser.add_argument("--vary", action="store_true", help="replace {n} in the body")
    args = parser.parse_args()
    result = _runner()(run(args))
    sys.stdout.write("BENCH_JSON " + json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
