"""Timed work: tunes finish training and prompts get their images.

Work is due by real time (``ready_after``, seconds since the epoch, stored with
the row), so it survives a restart and runs even while the API clock is frozen;
the timestamps written are the API clock's. One task on the event loop finds
due work; image generation runs in worker threads.

Every replica sharing the database runs this loop. A replica claims due rows
before working on them (a lease, renewed while a generation runs), so each is
done once; when a replica dies, its leases run out and another replica takes the
work. An outcome is written only onto a row that has none yet, so a late second
worker changes nothing and queues no second callback.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import replace
from datetime import timedelta
from functools import partial
from typing import Any

import anyio
import anyio.to_thread

from .backends import OPTION_FIELDS, Backend, FaceRef, Generated, GenerationJob
from .callbacks import Outbox
from .clock import Clock, iso
from .duework import POLL_SECONDS, keep_claim, run_when_due
from .files import FileStore
from .store import Row, Store

log = logging.getLogger("astria_mock.lifecycle")
EXPIRY = timedelta(days=30)
CONCURRENT_GENERATIONS = 4
"""At most this many generations at once, unless the backend sets its own ``concurrency``."""
CLAIM_BATCH = 64


class Lifecycle:
    def __init__(
        self,
        store: Store,
        files: FileStore,
        clock: Clock,
        backend: Backend,
        outbox: Outbox,
        lease: float = 10.0,
    ) -> None:
        self.store = store
        self.lease = lease
        self.outbox = outbox
        self.files = files
        self.clock = clock
        self.backend = backend
        self._wakeup: asyncio.Event | None = None
        self._next_pass = -math.inf
        """When the loop runs next, if no wake-up comes first (-inf while a pass runs)."""
        self._inflight: dict[int, asyncio.Task[None]] = {}
        self._limit = asyncio.Semaphore(
            int(getattr(backend, "concurrency", CONCURRENT_GENERATIONS))
        )

    def wake(self, at: float | None = None) -> None:
        """Work is due at ``at`` (epoch seconds; None: now). Work due no sooner than the
        next pass already planned needs no pass of its own: on the defaults each created
        prompt is due two seconds on, and a pass per create cost a third of the loop."""
        if self._wakeup is not None and (at is None or at < self._next_pass):
            self._wakeup.set()

    async def run(self) -> None:
        """Forever: do what is due, then sleep until the next due time or a wake-up."""
        self._wakeup = asyncio.Event()
        poll = POLL_SECONDS if self.store.shared else None
        await run_when_due(self.run_due, self._wakeup, log, poll)

    async def run_due(self) -> float | None:
        """Finish what is due; returns when the next work is due."""
        self._next_pass = -math.inf
        now = time.time()
        with self.store.begin() as tx:
            trained = tx.claim_due_tunes(now, self.lease, CLAIM_BATCH)
        for tune in trained:
            self._finish_training(tune)
        with self.store.begin() as tx:
            due = tx.claim_due_prompts(now, self.lease, CLAIM_BATCH)
        if due:
            await asyncio.gather(*(self._complete_claimed(row) for row in due))
        with self.store.read() as tx:
            next_due = tx.next_due()
        # Sharing the database, the loop also looks every POLL_SECONDS; it still runs by
        # next_due, so work due later than that needs no wake-up either.
        self._next_pass = math.inf if next_due is None else next_due
        return next_due

    def finish_training(self, tune_id: int) -> None:
        with self.store.begin() as tx:
            tune = tx.tune_by_id(tune_id)
        if tune is not None and tune["trained_at"] is None:
            self._finish_training(tune)

    def _finish_training(self, tune: Row) -> None:
        now = self.clock.now()
        queued = None
        with self.store.begin() as tx:
            finished = tx.finish_tune(
                tune["id"],
                trained_at=iso(now),
                updated_at=iso(now),
                expires_at=iso(now + EXPIRY),
                ready_after=None,
            )
            trained = tx.tune_by_id(tune["id"]) if finished else None
            if trained is not None:
                queued = self.outbox.tune_ready(tx, trained)
        self.outbox.committed(queued)

    async def complete(self, prompt_id: int) -> None:
        """Generate a prompt's images now (unless another replica holds it); concurrent
        calls for one prompt share the work."""
        with self.store.begin() as tx:
            claimed = tx.claim_prompt(prompt_id, time.time(), self.lease)
        if claimed is not None:
            await self._complete_claimed(claimed)
        elif prompt_id in self._inflight:
            await asyncio.shield(self._inflight[prompt_id])

    async def _complete_claimed(self, prompt: Row) -> None:
        prompt_id = prompt["id"]
        task = self._inflight.get(prompt_id)
        if task is None:
            task = asyncio.ensure_future(self._complete(prompt))
            self._inflight[prompt_id] = task
            task.add_done_callback(lambda _: self._inflight.pop(prompt_id, None))
        await asyncio.shield(task)

    async def _complete(self, prompt: Row) -> None:
        prompt_id = prompt["id"]
        with self.store.begin() as tx:
            tx.update_prompt(prompt_id, started_training_at=iso(self.clock.now()))
        job, face_keys = self._job(prompt)
        async with anyio.create_task_group() as holding:
            holding.start_soon(
                keep_claim, partial(self._renew, prompt_id), self.lease
            )  # while queued for the backend too
            try:
                async with self._limit:
                    result = await anyio.to_thread.run_sync(self._generate, job, face_keys)
                for note in result.notes:
                    log.info("prompt %s: %s", prompt_id, note)
                images = result.images
                files = [(f"prompts/{prompt_id}/{i}.jpg", image) for i, image in enumerate(images)]
                await anyio.to_thread.run_sync(self._put_all, files)
            except Exception as exc:
                log.exception("generation failed for prompt %s", prompt_id)
                self._fail(prompt_id, f"generation failed: {exc}")
                return
            finally:
                holding.cancel_scope.cancel()
        now = iso(self.clock.now())
        self._finish(prompt_id, trained_at=now, updated_at=now, image_count=len(images))

    def _generate(self, job: GenerationJob, face_keys: tuple[str | None, ...]) -> Generated:
        """In a worker thread: read the faces' files, then render."""
        faces = tuple(
            replace(ref, face=self.files.get(key) if key else None)
            for ref, key in zip(job.faces, face_keys, strict=True)
        )
        return self.backend.generate(replace(job, faces=faces))

    def _put_all(self, files: list[tuple[str, bytes]]) -> None:
        """In a worker thread: a prompt's image files, one after the other."""
        for key, data in files:
            self.files.put(key, data)

    def _finish(self, prompt_id: int, **outcome: Any) -> None:
        """Record a prompt's outcome and queue its callback in one transaction; once that
        has committed, the callback's delivery starts."""
        queued = None
        with self.store.begin() as tx:
            done = tx.prompt_by_id(prompt_id) if tx.finish_prompt(prompt_id, **outcome) else None
            if done is not None:
                queued = self.outbox.prompt_done(tx, done)
        self.outbox.committed(queued)

    def _renew(self, prompt_id: int, until: float) -> None:
        with self.store.begin() as tx:
            tx.extend_claims("prompts", [prompt_id], until)

    def _fail(self, prompt_id: int, message: str) -> None:
        self._finish(prompt_id, user_error=message, updated_at=iso(self.clock.now()))

    def _job(self, prompt: Row) -> tuple[GenerationJob, tuple[str | None, ...]]:
        """The backend's job, its faces still to be read (off the event loop), and the
        keys of their files."""
        attrs = prompt["attrs"]
        faces = []
        face_keys: list[str | None] = []
        for ref in attrs.get("adapters", []):
            if ref["kind"] != "faceid":
                continue
            with self.store.read() as tx:
                tune = tx.tune_by_id(ref["tune_id"])
            face_keys.append(tune["face_key"] if tune is not None else None)
            faces.append(FaceRef(ref["tune_id"], ref["strength"], None))
        loras = [ref for ref in attrs.get("adapters", []) if ref["kind"] == "lora"]
        options: list[tuple[str, object]] = [
            (name, attrs[name])
            for name in OPTION_FIELDS
            if attrs.get(name) not in (None, False, "")
        ]
        if loras:
            tags = " ".join(f"<lora:{ref['tune_id']}:{ref['strength']:g}>" for ref in loras)
            options.append(("lora", tags))
        seed = int(attrs["seed"])
        job = GenerationJob(
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
            options=tuple(options),
        )
        return job, tuple(face_keys)
