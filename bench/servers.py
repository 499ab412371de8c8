"""The processes under test: start on a free loopback port, wait until they answer, stop.

Every server runs in a process group of its own (``npx`` starts Prism as a child), so
stopping one ends all of it and nothing else.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
HOST = "127.0.0.1"
KEY = "sd_bench_key"
AUTH = f"Bearer {KEY}"


class ServerError(RuntimeError):
    """A server did not start, or stopped answering."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def http_status(port: int, path: str, timeout: float = 1.0) -> int | None:
    """The status of ``GET path`` on the port, or None when nothing answers (yet)."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            request = f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nConnection: close\r\n"
            sock.sendall((request + f"Authorization: {AUTH}\r\n\r\n").encode())
            first = sock.recv(64)
    except OSError:
        return None
    parts = first.split(b" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        return None
    return int(parts[1])


def server_env() -> dict[str, str]:
    """The environment of every process the harness starts: its own checkout first on the
    import path. A server runs outside the checkout (``python -m`` from a temp dir), where
    ``import mockserver`` would otherwise find whatever is installed, maybe another tree,
    while the in-process rows (``image``) import this one."""
    paths = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def mock_command(data_dir: Path, port: int, *extra: str) -> list[str]:
    """``astria-mock serve`` on its defaults (SQLite on disk), as the README runs it."""
    return [
        sys.executable, "-m", "mockserver.cli", "serve",
        "--data-dir", str(data_dir), "--port", str(port), "--log-level", "warning", *extra,
    ]  # fmt: skip


def baseline_command(bodies: Path, port: int) -> list[str]:
    return [
        sys.executable,
        str(BENCH / "baseline.py"),
        "--port",
        str(port),
        "--bodies",
        str(bodies),
    ]


def prism_command(port: int) -> list[str]:
    return [
        "npx", "--no-install", "prism", "mock", "-v", "error",
        "-h", HOST, "-p", str(port), str(ROOT / "openapi.yaml"),
    ]  # fmt: skip


class Server:
    """One process listening on ``port``; ``ready_path`` answers once it serves."""

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        port: int,
        ready_path: str = "/_mock/health",
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.command = list(command)
        self.port = port
        self.ready_path = ready_path
        self.cwd = cwd
        self.url = f"http://{HOST}:{port}"
        self.process: subprocess.Popen[bytes] | None = None
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - kept open for the server's life
        self.started_in: float | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = 30.0) -> Server:
        """Start and wait until ``ready_path`` answers; ``started_in`` is the time it took."""
        began = time.perf_counter()
        self.process = subprocess.Popen(
            self.command,
            cwd=self.cwd or tempfile.gettempdir(),
            env=server_env(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = began + timeout
        while True:
            status = http_status(self.port, self.ready_path, timeout=0.5)
            if status is not None and status < 500:
                self.started_in = time.perf_counter() - began
                return self
            if self.process.poll() is not None or time.perf_counter() > deadline:
                output = self.output()
                self.stop()
                raise ServerError(
                    f"{self.name} did not start ({' '.join(self.command)}):\n{output}"
                )
            time.sleep(0.002)

    def output(self) -> str:
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")[-4000:]

    def rss_kib(self) -> tuple[int, int]:
        """(VmRSS, VmHWM) of the server process, in KiB."""
        values = {"VmRSS": 0, "VmHWM": 0}
        with open(f"/proc/{self.pid}/status", encoding="ascii") as status:
            for line in status:
                name, _, rest = line.partition(":")
                if name in values:
                    values[name] = int(rest.split()[0])
        return values["VmRSS"], values["VmHWM"]

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far."""
        with open(f"/proc/{self.pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
