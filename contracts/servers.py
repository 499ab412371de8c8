"""Servers in a thread on 127.0.0.1: the mock (or any ASGI app) on a real port."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import replace
from types import TracebackType

import uvicorn
from starlette.types import ASGIApp

from mockserver.app import create_app
from mockserver.settings import Settings

START_TIMEOUT = 10.0


class LiveServer:
    """An ASGI app (by default the mock with ``settings``) under uvicorn on a free port."""

    def __init__(self, settings: Settings | None = None, app: ASGIApp | None = None) -> None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self._socket = sock
        self.port: int = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        if app is None:
            app = create_app(replace(settings or Settings(ephemeral=True), port=self.port))
        config = uvicorn.Config(app, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [sock]}, daemon=True
        )

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server on {self.url} did not start")
            time.sleep(0.01)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.server.should_exit = True
        self.thread.join(START_TIMEOUT)
        self._socket.close()
