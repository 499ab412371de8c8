"""Throughput of 1, 2 and 4 mock processes on one PostgreSQL against one on SQLite.

    python -m bench.replicas                    # about 2 minutes on 2 cores
    python -m bench.replicas --counts 1,2 --duration 3 --repeat 2

Each target is ``astria-mock serve`` with its default settings but the store:
SQLite on disk (one process), or ``--db postgresql://...`` with ``--workers N``
(N processes on one port, the kernel spreading connections, as replicas behind a
load balancer would be). Every target gets a fresh database. The load (wrk, or
bench/pyload.py without it) runs from its own process: ``POST
/tunes/690204/prompts`` (validated, stored, ids from the shared counter) and
``GET /prompts/{id}``. Rounds are interleaved with the order rotating; the
medians are compared with the SQLite target of the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from .load import LoadTool, Request
from .servers import AUTH, Server, free_port, mock_command

ADMIN_URL = os.environ.get("ASTRIA_MOCK_BENCH_POSTGRES", "postgresql://root@127.0.0.1:5432/test")
CONNECTIONS = 32
PROMPT = json.dumps({"prompt": {"text": "a portrait, <faceid:1:1>"}}).encode()


@contextmanager
def fresh_database() -> Iterator[str]:
    import psycopg

    name = f"astria_mock_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield ADMIN_URL.rsplit("/", 1)[0] + "/" + name
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def target(replicas: int | None) -> Iterator[Server]:
    """A started mock: SQLite when ``replicas`` is None, else N processes on PostgreSQL."""
    data_dir = Path(tempfile.mkdtemp(prefix="bench-replicas-"))
    extra = ["--prompt-seconds", "3600"]
    port = free_port()
    if replicas is None:
        with Server("sqlite x1", mock_command(data_dir, port, *extra), port) as server:
            yield server.start()
        return
    with fresh_database() as url:
        extra += ["--db", url, "--workers", str(replicas)]
        with Server(f"postgresql x{replicas}", mock_command(data_dir, port, *extra), port) as s:
            yield s.start()


def measure(server: Server, load: LoadTool, duration: float) -> dict[str, float]:
    headers = {"Authorization": AUTH, "Content-Type": "application/json"}
    with httpx.Client(base_url=server.url, headers=headers) as client:
        for _ in range(2):  # a tune with a face for the tag, then a prompt to read
            tune = client.post(
                "/tunes",
                json={
                    "tune": {
                        "title": "bench",
                        "name": "man",
                        "model_type": "faceid",
                        "image_urls": ["https://example.com/face.jpg"],
                    }
                },
            )
            tune.raise_for_status()
        prompt = client.post("/tunes/690204/prompts", content=PROMPT)
        prompt.raise_for_status()
    post = Request("POST", "/tunes/690204/prompts", PROMPT, "application/json")
    read = Request("GET", f"/prompts/{prompt.json()['id']}")
    results = {}
    for name, request in (("post", post), ("get", read)):
        result = load.run(server.url, request, duration, connections=CONNECTIONS)
        if not result.valid:
            raise RuntimeError(f"{server.name} {name}: {result.errors} errors")
        results[name] = result.rps
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.replicas", description=__doc__)
    parser.add_argument("--counts", default="1,2,4", help="replica counts on PostgreSQL")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per load run")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--load", choices=["auto", "wrk", "python"], default="auto")
    args = parser.parse_args(argv)
    try:
        import psycopg

        psycopg.connect(ADMIN_URL, connect_timeout=3).close()
    except Exception as exc:
        print(f"no PostgreSQL at {ADMIN_URL} ({exc}); set ASTRIA_MOCK_BENCH_POSTGRES")
        return 2
    load = LoadTool(args.load)
    targets: list[int | None] = [None, *(int(n) for n in args.counts.split(","))]
    runs: dict[int | None, list[dict[str, float]]] = {t: [] for t in targets}
    print(f"load: {load.name}, {CONNECTIONS} connections, {args.duration:g} s per run")
    for round_index in range(args.repeat):
        shift = round_index % len(targets)
        for replicas in targets[shift:] + targets[:shift]:
            with target(replicas) as server:
                runs[replicas].append(measure(server, load, args.duration))
            print(f"  round {round_index + 1}: {server.name} {runs[replicas][-1]}", flush=True)
    print()
    print("| target | POST prompt req/s | vs SQLite | GET prompt req/s | vs SQLite |")
    print("| --- | ---: | ---: | ---: | ---: |")
    base = {k: statistics.median(r[k] for r in runs[None]) for k in ("post", "get")}
    for replicas in targets:
        name = "sqlite x1" if replicas is None else f"postgresql x{replicas}"
        post = statistics.median(r["post"] for r in runs[replicas])
        get = statistics.median(r["get"] for r in runs[replicas])
        print(
            f"| {name} | {post:,.0f} | {post / base['post']:.2f}x "
            f"| {get:,.0f} | {get / base['get']:.2f}x |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
