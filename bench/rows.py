"""The rows of the table: each measures one thing and returns its checks.

Every comparison is made inside one run: the mock and its reference (the bare baseline,
Prism, Pillow alone, the same mock on a smaller store) are measured interleaved, several
rounds, and compared by their medians.
"""

from __future__ import annotations

import asyncio
import io
import json
import sqlite3
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from . import payloads
from .context import Context
from .load import Request, Summary
from .report import Check, fmt_ms, fmt_ratio, fmt_rps, verdict
from .servers import (
    AUTH,
    BENCH,
    Server,
    ServerError,
    baseline_command,
    free_port,
    mock_command,
)

MB = 1_000_000
JSON_TYPE = "application/json"


@dataclass(frozen=True, slots=True)
class Row:
    name: str
    title: str
    run: Callable[[Context], list[Check]]
    needs_load: bool = False


def _load_line(label: str, summary: Summary) -> str:
    latency = f"p50 {fmt_ms(summary.p50_ms)}, p99 {fmt_ms(summary.p99_ms)}"
    return f"{label} {fmt_rps(summary.rps)} ({latency})"


def _throughput_checks(
    ctx: Context,
    row: str,
    what: str,
    mock: tuple[Server, Request],
    baseline: tuple[Server, Request],
    prism_request: Request,
    vs_baseline: float,
    vs_prism: float,
    note: str = "",
) -> list[Check]:
    """Requests per second of the mock over the baseline's and over Prism's."""
    targets = [("mock", *mock), ("baseline", *baseline)]
    missing = ctx.prism_unavailable()
    if missing is None:
        targets.append(("prism", ctx.prism(), prism_request))
    results = ctx.compare(targets)
    ours = results["mock"]
    checks = []
    base = results["baseline"]
    ratio = ours.rps / base.rps if base.rps else 0.0
    checks.append(
        _checked(
            row,
            f"{what} vs bare Starlette",
            f"{_load_line('mock', ours)}; baseline {_load_line('', base).strip()}{note}",
            ratio,
            f">= {vs_baseline:g}x baseline req/s",
            ratio >= vs_baseline,
            ours,
            base,
        )
    )
    if missing is not None:
        checks.append(
            Check.skipped(row, f"{what} vs Prism", f">= {vs_prism:g}x Prism req/s", missing)
        )
    else:
        prism = results["prism"]
        ratio = ours.rps / prism.rps if prism.rps else 0.0
        checks.append(
            _checked(
                row,
                f"{what} vs Prism",
                f"{_load_line('mock', ours)}; Prism {_load_line('', prism).strip()}{note}",
                ratio,
                f">= {vs_prism:g}x Prism req/s",
                ratio >= vs_prism,
                ours,
                prism,
            )
        )
    return checks


def _checked(
    row: str, what: str, measured: str, ratio: float, target: str, ok: bool, *runs: Summary
) -> Check:
    errors = sum(s.errors for s in runs)
    if not all(s.valid for s in runs):
        measured += f"; {errors} errors in {sum(s.requests for s in runs)} requests"
        return Check(row, what, measured, fmt_ratio(ratio), target, "ERROR")
    return Check(row, what, measured, fmt_ratio(ratio), target, verdict(ok))


# -- GET /tunes/{id} -----------------------------------------------------------------------
def get_tune(ctx: Context) -> list[Check]:
    ctx.captured()
    mock, baseline = ctx.mock(), ctx.baseline()
    request = Request("GET", f"/tunes/{ctx.state['tune_id']}")
    return _throughput_checks(
        ctx,
        "get",
        "GET /tunes/{id}",
        (mock, request),
        (baseline, request),
        request,
        vs_baseline=0.6,
        vs_prism=2.0,
    )


# -- POST /tunes/{id}/prompts --------------------------------------------------------------
def post_prompt(ctx: Context) -> list[Check]:
    ctx.captured()
    # Prompts are due --prompt-seconds after creation; an hour here keeps image generation
    # (measured on its own in the "image" and "completion" rows) out of the request path and
    # out of the baseline's and Prism's turns, which run while the mock would be rendering.
    mock = ctx.mock("mock-prompts", "--prompt-seconds", "3600")
    tune = ctx.faceid_tune(mock)
    body = payloads.prompt_json(f"<faceid:{tune['id']}:1> {payloads.PROMPT_TEXT}")
    request = Request("POST", "/tunes/690204/prompts", body, JSON_TYPE)
    return _throughput_checks(
        ctx,
        "post",
        "POST /tunes/{id}/prompts (JSON)",
        (mock, request),
        (ctx.baseline(), request),
        request,
        vs_baseline=0.35,
        vs_prism=1.5,
        note="; mock with --prompt-seconds 3600",
    )


# -- POST /tunes multipart -----------------------------------------------------------------
def multipart_tune(ctx: Context) -> list[Check]:
    ctx.captured()
    jpegs = ctx.jpegs()
    body = payloads.faceid_tune_form(jpegs)
    request = Request("POST", "/tunes", body, payloads.MULTIPART_TYPE)
    results = ctx.compare(
        [("mock", ctx.mock(), request), ("baseline", ctx.baseline(), request)], connections=4
    )
    ours, base = results["mock"], results["baseline"]
    ratio = ours.p99_ms / base.p99_ms if base.p99_ms else 0.0
    sizes = "/".join(f"{len(j) // 1000}" for j in jpegs)
    measured = (
        f"mock p99 {fmt_ms(ours.p99_ms)} (p50 {fmt_ms(ours.p50_ms)}, {fmt_rps(ours.rps)}); "
        f"baseline p99 {fmt_ms(base.p99_ms)} (p50 {fmt_ms(base.p50_ms)}, {fmt_rps(base.rps)}); "
        f"4 JPEGs {sizes} KB, 4 connections"
    )
    what = "POST /tunes multipart, 4 JPEGs of 200 KB (p99)"
    return [
        _checked("multipart", what, measured, ratio, "<= 3x baseline p99", ratio <= 3.0, ours, base)
    ]


# -- prompt completion to callback ---------------------------------------------------------
def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def completion(ctx: Context) -> list[Check]:
    count = 100
    mock = ctx.mock("mock-now", "--prompt-seconds", "0")
    port = free_port()
    arrivals = ctx.tmp / "arrivals.jsonl"
    arrivals.touch()
    command = [
        sys.executable,
        str(BENCH / "receiver.py"),
        "--port",
        str(port),
        "--out",
        str(arrivals),
    ]
    receiver = Server("receiver", command, port, ready_path="/")
    ctx.servers["receiver"] = receiver.start()
    rounds = 1 if ctx.options.quick else max(1, min(ctx.options.repeat, 5))
    latencies: list[float] = []
    p50s: list[float] = []
    lost = 0
    sent = 0
    seen_lines = _complete_lines(arrivals)
    for round_ in range(rounds):
        ids = asyncio.run(_post_prompts(mock, port, round_, count))
        sent += len(ids)
        deadline = time.monotonic() + (30 if ctx.options.quick else 60)
        got: dict[int, float] = {}
        while time.monotonic() < deadline and len(got) < len(ids):
            time.sleep(0.05)
            got = _arrivals(arrivals, seen_lines, set(ids))
        seen_lines = _complete_lines(arrivals)
        lost += len(ids) - len(got)
        round_latencies = sorted(got.values())
        latencies += round_latencies
        if round_latencies:
            p50s.append(statistics.median(round_latencies))
        ctx.log(
            f"    round {round_ + 1}: {len(got)}/{len(ids)} callbacks, p50 "
            f"{fmt_ms(p50s[-1] if p50s else 0)}, max {fmt_ms(max(round_latencies, default=0))}"
        )
    p50 = statistics.median(p50s) if p50s else float("inf")
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))] if ordered else 0.0
    measured = (
        f"p50 {fmt_ms(p50)}, p99 {fmt_ms(p99)}, max {fmt_ms(max(ordered, default=0))}; "
        f"{sent - lost}/{sent} received ({rounds} x {count} concurrent, --prompt-seconds 0)"
    )
    ok = p50 < 20.0 and lost == 0
    return [
        Check(
            "completion",
            "prompt done -> callback received, 100 concurrent",
            measured,
            fmt_ratio(p50 / 20.0),
            "p50 < 20 ms, none lost",
            verdict(ok),
        )
    ]


async def _post_prompts(mock: Server, port: int, round_: int, count: int) -> list[int]:
    limits = httpx.Limits(max_connections=count)
    headers = {"Authorization": AUTH}
    async with httpx.AsyncClient(
        base_url=mock.url, headers=headers, limits=limits, timeout=60
    ) as client:

        async def one(index: int) -> int:
            callback = f"http://127.0.0.1:{port}/callbacks/{round_}/{index}"
            body = payloads.prompt_json(f"completion {round_}-{index}", callback)
            response = await client.post(
                "/tunes/690204/prompts", content=body, headers={"Content-Type": JSON_TYPE}
            )
            response.raise_for_status()
            prompt_id: int = response.json()["id"]
            return prompt_id

        return list(await asyncio.gather(*(one(i) for i in range(count))))


def _complete_lines(path: Path) -> int:
    """Lines the receiver has finished writing."""
    with path.open(encoding="utf-8") as lines:
        return sum(1 for line in lines if line.endswith("\n"))


def _arrivals(path: Path, skip: int, wanted: set[int]) -> dict[int, float]:
    """Prompt id -> milliseconds from the prompt's ``trained_at`` to the callback's arrival."""
    got: dict[int, float] = {}
    with path.open(encoding="utf-8") as lines:
        for index, line in enumerate(lines):
            if not line.endswith("\n"):
                break  # the receiver is still writing it: the next look reads it whole
            if index < skip or not line.strip():
                continue
            record = json.loads(line)
            try:
                body = json.loads(record["body"])
            except ValueError:
                continue  # the readiness probe
            prompt = body.get("prompt", body)
            if prompt.get("id") in wanted and prompt.get("trained_at"):
                got[prompt["id"]] = (record["t"] - _epoch(prompt["trained_at"])) * 1000
    return got


# -- placeholder image ---------------------------------------------------------------------
def image(ctx: Context) -> list[Check]:
    from PIL import Image

    from mockserver.images import Placeholder, render_placeholder

    iterations = 20 if ctx.options.quick else 200
    side = 512

    def render(i: int) -> bytes:
        text = f"portrait {i} of a woman trekking in the alps, golden hour, 35mm"
        return _render(i, text)

    def render_same_text(i: int) -> bytes:
        return _render(i, "a woman trekking in the alps, golden hour, 35mm")

    def _render(i: int, text: str) -> bytes:
        spec = Placeholder(
            side, side, 1000 + i, 0, text, f"tune 690204 · seed {1000 + i} · 1/1", None
        )
        data: bytes = render_placeholder(spec)
        return data

    def plain(i: int) -> bytes:
        out = io.BytesIO()
        Image.new("RGB", (side, side), (i % 256, 90, 160)).save(out, "JPEG", quality=85)
        return out.getvalue()

    def timed(function: Callable[[int], bytes], i: int) -> float:
        started = time.perf_counter()
        function(i)
        return (time.perf_counter() - started) * 1000

    for i in range(3):
        render(-1 - i)
        plain(i)
    times: dict[str, list[float]] = {"render": [], "same": [], "plain": []}
    functions = {"render": render, "same": render_same_text, "plain": plain}
    for i in range(iterations):
        names = list(functions)
        for name in names[i % 3 :] + names[: i % 3]:  # rotate the order
            times[name].append(timed(functions[name], i))
    ours, cached, pillow = (statistics.median(times[n]) for n in ("render", "same", "plain"))
    ratio = ours / pillow if pillow else 0.0
    measured = (
        f"render_placeholder {fmt_ms(ours)} with a new prompt text each time "
        f"({fmt_ms(cached)} = {fmt_ratio(cached / pillow if pillow else 0)} when the text repeats, "
        f"as for a prompt's 2nd..nth image); Pillow encoding a plain 512x512 image (q85) "
        f"{fmt_ms(pillow)}; {iterations} each"
    )
    return [
        Check(
            "image",
            "placeholder 512x512 JPEG",
            measured,
            fmt_ratio(ratio),
            "<= 2x Pillow encode",
            verdict(ratio <= 2.0),
        )
    ]


# -- start to ready ------------------------------------------------------------------------
def startup(ctx: Context) -> list[Check]:
    runs = 2 if ctx.options.quick else max(3, ctx.options.repeat)
    ours: list[float] = []
    bare: list[float] = []
    empty = ctx.tmp / "empty-bodies"
    empty.mkdir(exist_ok=True)
    for index in range(runs):
        port = free_port()
        data = ctx.data_dir(f"startup-{index}")
        with Server("startup", mock_command(data, port), port) as server:
            assert server.started_in is not None
            ours.append(server.started_in)
        port = free_port()
        with Server("startup-baseline", baseline_command(empty, port), port) as server:
            assert server.started_in is not None
            bare.append(server.started_in)
    value, reference = statistics.median(ours), statistics.median(bare)
    measured = (
        f"{value:.2f} s to the first 200 from /_mock/health, fresh data dir "
        f"(bare Starlette: {reference:.2f} s; {runs} runs)"
    )
    return [
        Check(
            "startup",
            "start to ready",
            measured,
            fmt_ratio(value / 1.0),
            "< 1 s",
            verdict(value < 1.0),
        )
    ]


# -- memory after 10,000 prompts -----------------------------------------------------------
def memory(ctx: Context) -> list[Check]:
    count = 200 if ctx.options.quick else 10_000
    mock = ctx.mock("mock-memory")
    rss_start, _ = mock.rss_kib()
    body = payloads.prompt_json("memory {n}: a woman trekking in the alps, golden hour")
    request = Request("POST", "/tunes/690204/prompts", body, JSON_TYPE)
    started = time.monotonic()
    sent = ctx.load.send(mock.url, request, count, vary=True)
    posted_in = time.monotonic() - started
    rss_posted, _ = mock.rss_kib()
    ctx.log(
        f"    {sent.requests} prompts posted in {posted_in:.1f} s ({sent.errors} errors); "
        f"RSS {rss_posted / 1000:.0f} MB; waiting until every one is done"
    )
    pending = _wait_all_done(mock, timeout=120 if ctx.options.quick else 900)
    rss, peak = mock.rss_kib()
    value = rss * 1024 / MB
    measured = (
        f"RSS {value:.0f} MB after {sent.requests:,} prompts created and rendered "
        f"(peak {peak * 1024 / MB:.0f} MB; {rss_posted * 1024 / MB:.0f} MB right after posting; "
        f"{rss_start * 1024 / MB:.0f} MB at start)"
    )
    if pending:
        measured += f"; {pending} still pending at the timeout"
    ok = value < 200 and sent.requests >= count and sent.errors == 0
    return [
        Check(
            "memory",
            f"RSS after {count:,} prompts",
            measured,
            fmt_ratio(value / 200),
            "< 200 MB",
            verdict(ok),
        )
    ]


def _wait_all_done(mock: Server, timeout: float) -> int:
    """Wait until every prompt has its images (or failed); returns how many are still not."""
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=mock.url, headers={"Authorization": AUTH}, timeout=60) as client:
        while True:
            newest = client.get("/prompts", params={"limit": 1}).json()
            if not newest or _done(newest[0]):
                pending = _count_pending(client)
                if pending == 0:
                    return 0
            else:
                pending = -1
            if time.monotonic() > deadline:
                return pending if pending >= 0 else _count_pending(client)
            time.sleep(0.5)


def _done(prompt: dict[str, Any]) -> bool:
    return bool(prompt.get("trained_at") or prompt.get("user_error"))


def _count_pending(client: httpx.Client) -> int:
    pending = 0
    before: int | None = None
    while True:
        params: dict[str, int] = {"limit": 120}
        if before is not None:
            params["before_id"] = before
        page = client.get("/prompts", params=params).json()
        if not page:
            return pending
        pending += sum(1 for prompt in page if not _done(prompt))
        before = page[-1]["id"]


# -- list pages at 100 vs 100,000 tunes ----------------------------------------------------
def list_pages(ctx: Context) -> list[Check]:
    small, big = 100, 100_000
    servers: dict[int, tuple[Server, int]] = {}
    for size in (small, big):
        servers[size] = _seeded_list_server(ctx, size)
    requests = {
        size: Request("GET", f"/tunes?before_id={before}&limit=20")
        for size, (_, before) in servers.items()
    }
    results = ctx.compare(
        [
            (f"{small:,}", servers[small][0], requests[small]),
            (f"{big:,}", servers[big][0], requests[big]),
        ]
    )
    few, many = results[f"{small:,}"], results[f"{big:,}"]
    ratio = few.rps / many.rps if many.rps else 0.0
    measured = (
        f"{small:,} tunes: {fmt_rps(few.rps)} (p50 {fmt_ms(few.p50_ms)}); "
        f"{big:,} tunes: {fmt_rps(many.rps)} (p50 {fmt_ms(many.p50_ms)}); "
        "a page of 20 in the middle"
    )
    return [
        _checked(
            "list",
            "GET /tunes?before_id=..&limit=20, 100k vs 100 tunes",
            measured,
            ratio,
            "<= 1.5x (cost at 100k / cost at 100)",
            ratio <= 1.5,
            few,
            many,
        )
    ]


API_SEEDED = 100


def _seeded_list_server(ctx: Context, size: int) -> tuple[Server, int]:
    """A mock whose tenant owns ``size`` tunes: 100 created through the API, the rest copied
    from them in SQL (same columns, new ids). Returns the server and a ``before_id`` in the
    middle of the ids."""
    name = f"list-{size}"
    server = ctx.mock(name)
    ids: list[int] = []
    with ctx.client(server) as client:
        for index in range(API_SEEDED):
            response = client.post(
                "/tunes",
                content=payloads.faceid_tune_json(f"list tune {index}"),
                headers={"Content-Type": JSON_TYPE},
            )
            response.raise_for_status()
            ids.append(response.json()["id"])
    if size > API_SEEDED:
        server.stop()
        _clone_tunes(
            ctx.data_dir(name), template=ids[-1], first=max(ids) + 1, count=size - len(ids)
        )
        ids += list(range(max(ids) + 1, max(ids) + 1 + size - len(ids)))
        del ctx.servers[name]
        server = ctx.mock(name)
    ids.sort()
    before = ids[len(ids) // 2]
    with ctx.client(server) as client:  # the copies are there, and a page is full
        last = client.get(f"/tunes/{ids[-1]}")
        page = client.get("/tunes", params={"before_id": before, "limit": 20})
    if last.status_code != 200 or page.status_code != 200 or len(page.json()) != 20:
        raise ServerError(
            f"{name}: seeding failed (GET /tunes/{ids[-1]}: {last.status_code}, "
            f"page: {page.status_code} {page.text[:200]})"
        )
    return server, before


def _clone_tunes(data_dir: Path, template: int, first: int, count: int) -> None:
    databases = sorted(data_dir.glob("*.sqlite3")) or sorted(data_dir.glob("*.db"))
    if not databases:
        raise FileNotFoundError(f"no SQLite store in {data_dir}")
    with sqlite3.connect(databases[0]) as db:
        columns = [row[1] for row in db.execute("PRAGMA table_info(tunes)")]
        values = []
        for column in columns:
            if column == "id":
                values.append(":first + n")
            elif column == "title":
                values.append("'bench tune ' || (:first + n)")
            else:
                values.append(f't."{column}"')
        names = ", ".join(f'"{c}"' for c in columns)
        db.execute(
            f"INSERT INTO tunes ({names}) "
            "WITH RECURSIVE seq(n) AS "
            "(SELECT 0 UNION ALL SELECT n + 1 FROM seq WHERE n + 1 < :count) "
            f"SELECT {', '.join(values)} FROM seq, tunes AS t WHERE t.id = :template",
            {"first": first, "count": count, "template": template},
        )
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "counters" in tables:
            db.execute(
                "UPDATE counters SET value = max(value, :last) WHERE name = 'tunes'",
                {"last": first + count - 1},
            )


ROWS = [
    Row("get", "GET /tunes/{id}", get_tune, needs_load=True),
    Row("post", "POST /tunes/{id}/prompts", post_prompt, needs_load=True),
    Row("multipart", "POST /tunes multipart", multipart_tune, needs_load=True),
    Row("completion", "prompt completion to callback", completion),
    Row("image", "placeholder image", image),
    Row("startup", "start to ready", startup),
    Row("memory", "RSS after 10,000 prompts", memory),
    Row("list", "list pages at 100 vs 100,000 tunes", list_pages, needs_load=True),
]
ROW_NAMES = [row.name for row in ROWS]
