"""Load from a separate process on loopback: wrk when installed, else ``bench/pyload.py``.

Both print the same summary (requests, duration, latency percentiles, errors), so the rows
never care which tool ran. wrk gets a generated Lua script that sets the method, the
headers and the body (read from a file, so binary multipart bodies work) and prints the
summary as JSON in ``done()``.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .servers import AUTH, BENCH

CONNECTIONS = 16


@dataclass(frozen=True, slots=True)
class Request:
    """What each load request sends."""

    method: str
    path: str
    body: bytes = b""
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=lambda: {"Authorization": AUTH})


@dataclass(frozen=True, slots=True)
class Result:
    requests: int
    duration_s: float
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int

    @property
    def valid(self) -> bool:
        """At least one answer, and under 1% errors (non-2xx/3xx or broken connections)."""
        return self.requests > 0 and self.errors <= 0.01 * self.requests


@dataclass(frozen=True, slots=True)
class Summary:
    """Medians over repetitions."""

    runs: list[Result]

    @property
    def rps(self) -> float:
        return statistics.median(r.rps for r in self.runs)

    @property
    def p50_ms(self) -> float:
        return statistics.median(r.p50_ms for r in self.runs)

    @property
    def p99_ms(self) -> float:
        return statistics.median(r.p99_ms for r in self.runs)

    @property
    def errors(self) -> int:
        return sum(r.errors for r in self.runs)

    @property
    def requests(self) -> int:
        return sum(r.requests for r in self.runs)

    @property
    def valid(self) -> bool:
        return bool(self.runs) and all(r.valid for r in self.runs)


class LoadError(RuntimeError):
    """The load tool failed or printed no summary."""


WRK_SCRIPT = """\
wrk.method = {method}
{headers}
{body}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {{"requests":%d,"duration_s":%.6f,"p50_ms":%.4f,"p99_ms":%.4f,'
    .. '"errors":%d}}\\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1000,
    latency:percentile(99) / 1000,
    e.connect + e.read + e.write + e.status + e.timeout))
end
"""


WRK_BODY = """\
local f = assert(io.open({path}, "rb"))
wrk.body = f:read("*a")
f:close()"""


def _lua(value: str) -> str:
    return json.dumps(value)  # a JSON string literal is a valid Lua string literal here


class LoadTool:
    """Runs one load test against a base URL; ``name`` says which tool it is."""

    def __init__(self, prefer: str = "auto", workdir: Path | None = None) -> None:
        self.wrk = shutil.which("wrk")
        if prefer == "wrk" and self.wrk is None:
            raise LoadError("wrk is not installed (apt-get install -y wrk)")
        self.use_wrk = self.wrk is not None and prefer != "python"
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="bench-load-"))
        self._scripts = 0
        self.note = ""
        if not self.use_wrk and prefer == "auto":
            self.note = "wrk not found (apt-get install -y wrk); fell back to bench/pyload.py"

    @property
    def name(self) -> str:
        if self.use_wrk:
            version = subprocess.run(
                [self.wrk or "wrk", "--version"], capture_output=True, text=True, check=False
            )
            first = (version.stdout + version.stderr).strip().splitlines()
            label = first[0].split(" [")[0] if first else "wrk"
            return f"{label}, 1 thread"
        return "bench/pyload.py (Python asyncio, keep-alive HTTP/1.1)"

    def effective(self, duration: float) -> float:
        """The duration a run really lasts (wrk takes whole seconds)."""
        return float(wrk_seconds(duration)) if self.use_wrk else duration

    def _body_file(self, body: bytes) -> Path:
        self._scripts += 1
        path = self.workdir / f"body-{self._scripts}.bin"
        path.write_bytes(body)
        return path

    def run(
        self,
        base_url: str,
        request: Request,
        duration: float,
        connections: int = CONNECTIONS,
        timeout_s: float = 10.0,
    ) -> Result:
        if self.use_wrk:
            return self._run_wrk(base_url, request, duration, connections, timeout_s)
        return self._run_python(base_url, request, duration, connections)

    def _headers(self, request: Request) -> dict[str, str]:
        headers = dict(request.headers)
        if request.content_type:
            headers["Content-Type"] = request.content_type
        return headers

    def _run_wrk(
        self, base_url: str, request: Request, duration: float, connections: int, timeout_s: float
    ) -> Result:
        headers = "\n".join(
            f"wrk.headers[{_lua(k)}] = {_lua(v)}" for k, v in self._headers(request).items()
        )
        body = ""
        if request.body:
            path = self._body_file(request.body)
            body = WRK_BODY.format(path=_lua(str(path)))
        script = self.workdir / f"script-{self._scripts}.lua"
        script.write_text(
            WRK_SCRIPT.format(method=_lua(request.method), headers=headers, body=body)
        )
        command = [
            self.wrk or "wrk", "-t1", f"-c{connections}", f"-d{wrk_seconds(duration)}s",
            f"--timeout={timeout_s:g}s", "-s", str(script), base_url + request.path,
        ]  # fmt: skip
        return _parse(_run(command, duration))

    def _run_python(
        self, base_url: str, request: Request, duration: float, connections: int
    ) -> Result:
        command = self._pyload(base_url, request, connections, "--duration", f"{duration:g}")
        return _parse(_run(command, duration))

    def _pyload(
        self, base_url: str, request: Request, connections: int, *how_long: str
    ) -> list[str]:
        """bench/pyload.py for ``request``; ``how_long`` is ``--duration S`` or ``--requests N``."""
        command = [
            sys.executable, str(BENCH / "pyload.py"), base_url + request.path,
            "--method", request.method, *how_long, "--connections", str(connections),
        ]  # fmt: skip
        for name, value in self._headers(request).items():
            command += ["--header", f"{name}: {value}"]
        if request.body:
            command += ["--body", str(self._body_file(request.body))]
        return command

    def send(
        self,
        base_url: str,
        request: Request,
        count: int,
        connections: int = CONNECTIONS,
        vary: bool = False,
    ) -> Result:
        """Send exactly ``count`` requests (``{n}`` in the body numbered when ``vary``)."""
        command = self._pyload(base_url, request, connections, "--requests", str(count))
        if vary:
            command.append("--vary")
        return _parse(_run(command, 600.0))


def wrk_seconds(duration: float) -> int:
    """wrk takes whole seconds."""
    return max(1, round(duration))


def _run(command: list[str], duration: float) -> str:
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=duration + 120, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise LoadError(f"{command[0]} did not finish") from exc
    if done.returncode != 0:
        raise LoadError(f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def _parse(output: str) -> Result:
    for line in output.splitlines():
        if line.startswith("BENCH_JSON "):
            data = json.loads(line[len("BENCH_JSON ") :])
            duration = float(data["duration_s"])
            requests = int(data["requests"])
            errors = int(data.get("errors", 0)) + int(data.get("status_errors", 0))
            errors += int(data.get("io_errors", 0))
            return Result(
                requests=requests,
                duration_s=duration,
                rps=requests / duration if duration else 0.0,
                p50_ms=float(data["p50_ms"]),
                p99_ms=float(data["p99_ms"]),
                errors=errors,
            )
    raise LoadError(f"no summary in the load tool's output:\n{output[-2000:]}")
