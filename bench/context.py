"""What the rows share: options, a temporary directory, the load tool, the servers.

Servers start on first use and stay up for the rest of the run, so the baseline and Prism
start once for all the rows that compare against them; every server stops at the end.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from . import payloads
from .load import LoadTool, Request, Summary
from .servers import (
    AUTH,
    ROOT,
    Server,
    ServerError,
    baseline_command,
    free_port,
    mock_command,
    prism_command,
)


@dataclass(frozen=True, slots=True)
class Options:
    quick: bool = False
    duration: float = 5.0
    repeat: int = 5
    load: str = "auto"
    prism: bool = True
    connections: int = 16

    @property
    def warmup(self) -> float:
        """Seconds of load before the measured rounds; none in quick mode."""
        return 0.0 if self.quick else min(1.0, self.duration / 2)


class Context:
    def __init__(self, options: Options, log: Any = None) -> None:
        self.options = options
        self.tmp = Path(tempfile.mkdtemp(prefix="astria-bench-"))
        self.load = LoadTool(options.load, self.tmp / "load")
        (self.tmp / "load").mkdir(exist_ok=True)
        self.servers: dict[str, Server] = {}
        self.state: dict[str, Any] = {}
        self._log = log or (lambda message: print(message, file=sys.stderr, flush=True))
        self._prism_missing: str | None = None

    def log(self, message: str) -> None:
        self._log(message)

    def close(self) -> None:
        for server in self.servers.values():
            server.stop()
        self.servers.clear()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # servers ---------------------------------------------------------------
    def data_dir(self, name: str) -> Path:
        path = self.tmp / "data" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def mock(self, name: str = "mock", *extra: str) -> Server:
        """``astria-mock serve`` with a fresh on-disk store (defaults plus ``extra`` flags)."""
        if name not in self.servers:
            port = free_port()
            command = mock_command(self.data_dir(name), port, *extra)
            self.log(f"  starting {name}: astria-mock serve {' '.join(command[4:])}")
            self.servers[name] = Server(name, command, port).start()
        return self.servers[name]

    def baseline(self) -> Server:
        if "baseline" not in self.servers:
            bodies = self.captured()
            port = free_port()
            self.log("  starting the bare Starlette baseline (uvloop + httptools)")
            self.servers["baseline"] = Server(
                "baseline", baseline_command(bodies, port), port
            ).start()
        return self.servers["baseline"]

    def prism_unavailable(self) -> str | None:
        """Why Prism cannot run here, or None."""
        if not self.options.prism:
            return "Prism left out (--no-prism)"
        if self._prism_missing is None:
            if shutil.which("npx") is None:
                self._prism_missing = "npx not found (install Node.js, then npm ci)"
            else:
                probe = subprocess.run(
                    ["npx", "--no-install", "prism", "--version"],
                    cwd=ROOT,
                    capture_output=True,
                    text=True,
                    check=False,
                    timeout=120,
                )
                self._prism_missing = (
                    ""
                    if probe.returncode == 0
                    else "Prism not installed (npm ci installs @stoplight/prism-cli)"
                )
        return self._prism_missing or None

    def prism(self) -> Server:
        if "prism" not in self.servers:
            port = free_port()
            self.log("  starting Prism: npx --no-install prism mock -v error openapi.yaml")
            server = Server("prism", prism_command(port), port, ready_path="/tunes/1", cwd=ROOT)
            self.servers["prism"] = server.start(timeout=120)
        return self.servers["prism"]

    # the mock's answers, for the baseline -----------------------------------
    def client(self, server: Server, timeout: float = 60.0) -> httpx.Client:
        return httpx.Client(base_url=server.url, headers={"Authorization": AUTH}, timeout=timeout)

    def faceid_tune(self, server: Server, images: list[bytes] | None = None) -> dict[str, Any]:
        with self.client(server) as client:
            response = client.post(
                "/tunes",
                content=payloads.faceid_tune_form(images or [payloads.small_jpeg()]),
                headers={"Content-Type": payloads.MULTIPART_TYPE},
            )
        if response.status_code != 201:
            raise ServerError(
                f"POST /tunes on {server.name}: {response.status_code} {response.text}"
            )
        tune: dict[str, Any] = response.json()
        return tune

    def jpegs(self) -> list[bytes]:
        if "jpegs" not in self.state:
            self.state["jpegs"] = [payloads.photo_like_jpeg(seed) for seed in range(4)]
        jpegs: list[bytes] = self.state["jpegs"]
        return jpegs

    def captured(self) -> Path:
        """Capture what the mock answers (a tune, a prompt, a created tune, a list page)
        into files the baseline serves as they are."""
        directory = self.tmp / "bodies"
        if directory.exists():
            return directory
        mock = self.mock()
        tune = self.faceid_tune(mock)
        self.state["tune_id"] = tune["id"]
        bodies: dict[str, bytes] = {}
        with self.client(mock) as client:
            bodies["get_tune"] = _ok(client.get(f"/tunes/{tune['id']}"), 200).content
            prompt = payloads.prompt_json(f"<faceid:{tune['id']}:1> {payloads.PROMPT_TEXT}")
            bodies["create_prompt"] = _ok(
                client.post(
                    "/tunes/690204/prompts",
                    content=prompt,
                    headers={"Content-Type": "application/json"},
                ),
                201,
            ).content
            form = payloads.faceid_tune_form(self.jpegs())
            bodies["create_tune"] = _ok(
                client.post(
                    "/tunes", content=form, headers={"Content-Type": payloads.MULTIPART_TYPE}
                ),
                201,
            ).content
            bodies["list_tunes"] = _ok(client.get("/tunes?limit=20"), 200).content
        directory.mkdir()
        for name, body in bodies.items():
            (directory / f"{name}.json").write_bytes(body)
        return directory

    # load --------------------------------------------------------------------
    def compare(
        self,
        targets: list[tuple[str, Server, Request]],
        connections: int | None = None,
    ) -> dict[str, Summary]:
        """Load each target in turn, interleaved: a warm-up each, then ``repeat`` rounds,
        the order rotating every round; medians per target."""
        conns = connections or self.options.connections
        for name, server, request in targets:
            self._probe(name, server, request)
            if self.options.warmup:
                self.load.run(server.url, request, self.options.warmup, conns)
        runs: dict[str, list[Any]] = {name: [] for name, _, _ in targets}
        for round_ in range(self.options.repeat):
            shift = round_ % len(targets)
            for name, server, request in targets[shift:] + targets[:shift]:
                result = self.load.run(server.url, request, self.options.duration, conns)
                runs[name].append(result)
                self.log(
                    f"    {name:<10} {result.rps:>9,.0f} req/s  p50 {result.p50_ms:7.2f} ms"
                    f"  p99 {result.p99_ms:7.2f} ms  errors {result.errors}"
                )
        return {name: Summary(results) for name, results in runs.items()}

    def _probe(self, name: str, server: Server, request: Request) -> None:
        headers = dict(request.headers)
        if request.content_type:
            headers["Content-Type"] = request.content_type
        with httpx.Client(base_url=server.url, timeout=60) as client:
            response = client.request(
                request.method, request.path, content=request.body or None, headers=headers
            )
        if not 200 <= response.status_code < 300:
            raise ServerError(
                f"{name}: {request.method} {request.path} answered {response.status_code}: "
                f"{response.text[:500]}"
            )


def _ok(response: httpx.Response, status: int) -> httpx.Response:
    if response.status_code != status:
        request = response.request
        raise ServerError(
            f"{request.method} {request.url.path}: expected {status}, got "
            f"{response.status_code}: {response.text[:500]}"
        )
    return response


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0
