"""The parts of a mock process beside HTTP: state, files, the lifecycle, the dispatcher.

``astria-mock serve`` builds these under its Starlette app; ``astria-mock
worker`` builds the same parts with no app, to render prompts and deliver
callbacks for replicas that share its database and files.
"""

from __future__ import annotations

from dataclasses import dataclass

import anyio

from .backends import load_backend
from .callbacks import Dispatcher, Outbox
from .clock import Clock, parse_clock
from .files import DirectoryFileStore, FileStore, MemoryFileStore
from .gallery import GALLERY_TUNES
from .lifecycle import Lifecycle
from .settings import Settings
from .store import Store


@dataclass(frozen=True, slots=True)
class Runtime:
    settings: Settings
    clock: Clock
    store: Store
    files: FileStore
    outbox: Outbox
    dispatcher: Dispatcher
    lifecycle: Lifecycle

    def wake(self, at: float | None = None) -> None:
        """Tell the workers that work may be due: a prompt or tune due at ``at`` (epoch
        seconds) concerns the lifecycle alone; work due now (None), also the dispatcher."""
        self.lifecycle.wake(at)
        if at is None:
            self.dispatcher.wake()

    async def run(self, generate: bool) -> None:
        """Deliver callbacks and, with ``generate``, do due work, until cancelled."""
        async with anyio.create_task_group() as group:
            if generate:
                group.start_soon(self.lifecycle.run)
            group.start_soon(self.dispatcher.run)


def build_runtime(settings: Settings) -> Runtime:
    """Open the store (migrating it), the files, and the background workers."""
    clock = parse_clock(settings.clock)
    if not settings.ephemeral:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(settings.database_url, clock.stamp)
    with store.begin() as tx:
        for tune in GALLERY_TUNES:
            tx.ensure_tune(dict(tune))
    files: FileStore = (
        MemoryFileStore() if settings.ephemeral else DirectoryFileStore(settings.data_dir / "files")
    )
    dispatcher = Dispatcher(store, settings, clock)
    outbox = Outbox(settings, clock, dispatcher)
    cache = None if settings.ephemeral else settings.data_dir / "faceid-embeddings"
    backend = load_backend(settings.backend, settings.weights, cache, eager=settings.generate)
    lifecycle = Lifecycle(store, files, clock, backend, outbox, settings.lease_seconds)
    return Runtime(settings, clock, store, files, outbox, dispatcher, lifecycle)
