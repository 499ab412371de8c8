"""Timed work: tunes finish training and prompts get their images.

Work is due by real time (``ready_after``, seconds since the epoch, stored with
the row), so it survives a restart and runs even while the API clock is frozen;
the timestamps written are the API clock's. One task on the event loop finds
due work; image generation runs in worker threads.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import timedelta

import anyio
import anyio.to_thread

from .backends import Backend, FaceRef, GenerationJob
from .callbacks import Outbox
from .clock import Clock, iso
from .duework import run_when_due
from .files import FileStore
from .store import Row, Store, Tx

log = logging.getLogger("astria_mock.lifecycle")
EXPIRY = timedelta(days=30)
CONCURRENT_GENERATIONS = 4


class Lifecycle:
    def __init__(
        self,
        store: Store,
        files: FileStore,
        clock: Clock,
        backend: Backend,
        outbox: Outbox,
        callbacks_due: Callable[[], None],
    ) -> None:
        self.store = store
        self.outbox = outbox
        self.callbacks_due = callbacks_due
        self.files = files
        self.clock = clock
        self.backend = backend
        self._wakeup: asyncio.Event | None = None
        self._inflight: dict[int, asyncio.Task[None]] = {}
        self._limit = asyncio.Semaphore(CONCURRENT_GENERATIONS)

    def wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    async def run(self) -> None:
        """Forever: do what is due, then sleep until the next due time or a wake-up."""
        self._wakeup = asyncio.Event()
        await run_when_due(self.run_due, self._wakeup, log)

    async def run_due(self) -> float | None:
        """Finish what is due; returns when the next work is due."""
        now = time.time()
        with self.store.begin() as tx:
            trained = tx.due_tunes(now)
        for tune in trained:
            self._finish_training(tune)
        with self.store.begin() as tx:
            due = [row["id"] for row in tx.due_prompts(now)]
        if due:
            await asyncio.gather(*(self.complete(prompt_id) for prompt_id in due))
        with self.store.begin() as tx:
            return tx.next_due()

    def finish_training(self, tune_id: int) -> None:
        with self.store.begin() as tx:
            tune = tx.tune_by_id(tune_id)
        if tune is not None and tune["trained_at"] is None:
            self._finish_training(tune)

    def _finish_training(self, tune: Row) -> None:
        now = self.clock.now()
        with self.store.begin() as tx:
            tx.update_tune(
                tune["id"],
                trained_at=iso(now),
                updated_at=iso(now),
                expires_at=iso(now + EXPIRY),
                ready_after=None,
            )
            self._notify(tx, tune=tx.tune_by_id(tune["id"]))

    def _notify(self, tx: Tx, tune: Row | None = None, prompt: Row | None = None) -> None:
        """Queue the callback of a tune or prompt that just changed, in the same transaction."""
        queued = (tune is not None and self.outbox.tune_ready(tx, tune)) or (
            prompt is not None and self.outbox.prompt_done(tx, prompt)
        )
        if queued:
            self.callbacks_due()

    async def complete(self, prompt_id: int) -> None:
        """Generate a prompt's images now; concurrent calls for one prompt share the work."""
        task = self._inflight.get(prompt_id)
        if task is None:
            task = asyncio.ensure_future(self._complete(prompt_id))
            self._inflight[prompt_id] = task
            task.add_done_callback(lambda _: self._inflight.pop(prompt_id, None))
        await asyncio.shield(task)

    async def _complete(self, prompt_id: int) -> None:
        with self.store.begin() as tx:
            prompt = tx.prompt_by_id(prompt_id)
            if prompt is None or prompt["trained_at"] is not None or prompt["user_error"]:
                return
            tx.update_prompt(prompt_id, started_training_at=iso(self.clock.now()))
        job = self._job(prompt)
        async with self._limit:
            try:
                images = await anyio.to_thread.run_sync(self.backend.generate, job)
                for index, image in enumerate(images):
                    key = f"prompts/{prompt_id}/{index}.jpg"
                    await anyio.to_thread.run_sync(self.files.put, key, image)
            except Exception as exc:
                log.exception("generation failed for prompt %s", prompt_id)
                self._fail(prompt_id, f"generation failed: {exc}")
                return
        now = iso(self.clock.now())
        with self.store.begin() as tx:
            tx.update_prompt(
                prompt_id, trained_at=now, updated_at=now, image_count=len(images), ready_after=None
            )
            self._notify(tx, prompt=tx.prompt_by_id(prompt_id))

    def _fail(self, prompt_id: int, message: str) -> None:
        now = iso(self.clock.now())
        with self.store.begin() as tx:
            tx.update_prompt(prompt_id, user_error=message, updated_at=now, ready_after=None)
            self._notify(tx, prompt=tx.prompt_by_id(prompt_id))

    def _job(self, prompt: Row) -> GenerationJob:
        attrs = prompt["attrs"]
        faces = []
        for ref in attrs.get("adapters", []):
            if ref["kind"] != "faceid":
                continue
            with self.store.begin() as tx:
                tune = tx.tune_by_id(ref["tune_id"])
            face_key = tune["face_key"] if tune is not None else None
            face = self.files.get(face_key) if face_key else None
            faces.append(FaceRef(ref["tune_id"], ref["strength"], face))
        seed = int(attrs["seed"])
        return GenerationJob(
            prompt_id=prompt["id"],
            tune_id=prompt["tune_id"],
            text=attrs["text"],
            negative_prompt=attrs.get("negative_prompt"),
            width=attrs["width"],
            height=attrs["height"],
            seeds=tuple((seed + index) % 2**32 for index in range(attrs["num_images"])),
            scheduler=attrs.get("scheduler"),
            cfg_scale=attrs.get("cfg_scale"),
            steps=attrs.get("steps"),
            faces=tuple(faces),
        )
