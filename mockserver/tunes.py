"""Tune rules: FaceID placeholders, training, images, idempotency, creation and deletion."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import anyio.to_thread

from .bodies import UploadedFile
from .callbacks import check_callback_url
from .clock import iso
from .errors import Unprocessable
from .files import FileStore
from .gallery import GALLERY_IDS
from .images import ImageInfo, InvalidImage, inspect_upload
from .prompts import (
    PromptDraft,
    check_uploads,
    decode_data_url,
    draft_prompt,
    prompt_row,
    store_uploads,
)
from .services import Services
from .store import Row

EXPIRY = timedelta(days=30)
EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}
TUNE_FIELDS = (
    "name", "base_tune_id", "steps", "token", "face_crop", "training_face_correct",
    "callback", "auto_extend", "preset", "characteristics",
)  # fmt: skip


def _image_bytes(item: Any, index: int) -> bytes:
    if isinstance(item, UploadedFile):
        return item.data
    return decode_data_url(str(item), f"images[{index}]")


def _inspect_all(uploads: list[bytes]) -> list[ImageInfo]:
    infos = []
    for index, data in enumerate(uploads):
        try:
            infos.append(inspect_upload(data))
        except InvalidImage as exc:
            raise Unprocessable.on(f"images[{index}]", str(exc)) from None
    return infos


def _check_and_store(files: FileStore, tune_id: int, uploads: list[bytes]) -> list[str]:
    """In a worker thread: check every upload (the first bad one is a 422), then store
    them all; returns their keys. One hop for both: a hop costs more than the checks of
    JPEGs, and the file names need the tune's id."""
    infos = _inspect_all(uploads)
    keys = [f"tunes/{tune_id}/{i}.{EXTENSIONS[info.format]}" for i, info in enumerate(infos)]
    for key, data in zip(keys, uploads, strict=True):
        files.put_upload(key, data)
    return keys


def _branch_and_type(fields: dict[str, Any], base: Row | None) -> tuple[str, str | None]:
    model_type = fields.get("model_type")
    if model_type == "faceid":
        return "sd15", "faceid"
    branch = fields.get("branch") or (base["branch"] if base is not None else "sd15")
    if branch == "sdxl1":
        model_type = "pti"
    return branch, model_type


def _default_token(branch: str, model_type: str | None) -> str:
    return "sks" if branch == "sd15" and model_type != "faceid" else "ohwx"


async def create_tune(services: Services, tenant: str, fields: dict[str, Any]) -> Row:
    """The whole create call; the tune and its ``prompts_attributes`` land in one transaction."""
    uploads = [_image_bytes(item, i) for i, item in enumerate(fields.get("images") or [])]
    urls = list(fields.get("image_urls") or [])
    if not uploads and not urls:
        raise Unprocessable.on("images", "can't be blank (send images or image_urls)")
    check_callback_url(fields.get("callback"), services.settings.callback_allow)

    with services.store.begin() as tx:
        if services.settings.idempotency:
            existing = tx.tune_by_key(tenant, fields["title"])
            if existing is not None:
                return existing
        base = None
        model_type = fields.get("model_type")
        if fields.get("base_tune_id") is not None and model_type != "faceid":
            base = tx.tune(tenant, fields["base_tune_id"])
            if base is None:
                message = f"refers to tune {fields['base_tune_id']}, which does not exist"
                raise Unprocessable.on("base_tune_id", message)
        branch, model_type = _branch_and_type(fields, base)
        tune_id = tx.next_id("tunes", skip=GALLERY_IDS)
        now = services.clock.now()
        training = timedelta(seconds=services.settings.train_seconds)
        ready_now = model_type == "faceid" or branch == "fast"
        attrs = {name: fields[name] for name in TUNE_FIELDS if name in fields}
        attrs["token"] = fields.get("token") or _default_token(branch, model_type)
        attrs["is_api"] = True
        if model_type == "faceid":
            attrs["steps"] = None
            attrs["training_face_correct"] = False
        tune: dict[str, Any] = {
            "id": tune_id,
            "tenant": tenant,
            "title": fields["title"],
            "model_type": model_type,
            "branch": branch,
            "attrs": attrs,
            "orig_images": [],
            "face_key": None,
            "created_at": iso(now),
            "updated_at": iso(now),
            "started_training_at": iso(now),
            "trained_at": iso(now) if ready_now else None,
            "eta": iso(
                now if ready_now else now + timedelta(seconds=services.settings.train_seconds)
            ),
            "expires_at": iso(now + EXPIRY) if ready_now else None,
            "auto_extend": bool(fields.get("auto_extend")),
            "ready_after": None if ready_now else time.time() + training.total_seconds(),
            "claimed_until": None,
            "idem_key": fields["title"] if services.settings.idempotency else None,
        }
        drafts: list[tuple[int, PromptDraft]] = []
        for index, prompt_fields in enumerate(fields.get("prompts_attributes") or []):
            prompt_id = tx.next_id("prompts")
            try:
                drafts.append(
                    (prompt_id, draft_prompt(services, tx, tenant, tune, prompt_fields, prompt_id))
                )
            except Unprocessable as exc:
                prefixed = {f"prompts_attributes[{index}].{k}": v for k, v in exc.fields.items()}
                raise Unprocessable(prefixed) from None

    for _, draft in drafts:
        await check_uploads(draft)
    keys: list[str] = []
    if uploads:
        keys = await anyio.to_thread.run_sync(_check_and_store, services.files, tune_id, uploads)
    tune["orig_images"] = [{"key": key} for key in keys] + [{"url": url} for url in urls]
    if model_type == "faceid" and keys:
        # The first upload is the face. The placeholder renderer fits it (decoded at a
        # reduced scale, once per tune and size), so creating a tune decodes no pixels.
        tune["face_key"] = keys[0]
    for prompt_id, draft in drafts:
        await store_uploads(services, prompt_id, draft)

    with services.store.begin() as tx:
        # Not inserted: the same title was created meanwhile (on this or another replica).
        existing = None if tx.insert_tune(tune) else tx.tune_by_key(tenant, fields["title"])
        if existing is None:
            for prompt_id, draft in drafts:
                tx.insert_prompt(prompt_row(services, tenant, tune, prompt_id, draft))
            row = tune  # as stored: every column is in it
            queued = services.outbox.tune_ready(tx, row) if ready_now else None
    if existing is not None:
        for prefix in [f"tunes/{tune_id}", *(f"prompts/{pid}" for pid, _ in drafts)]:
            await anyio.to_thread.run_sync(services.files.delete_prefix, prefix)
        return existing
    services.outbox.committed(queued)  # a callback: its delivery starts now
    if drafts or not ready_now:
        # Only then is there work for the lifecycle (training, prompts); each wake-up
        # costs a pass of queries on the event loop.
        services.wake(None)
    return row


async def delete_tune(services: Services, tenant: str, tune: Row) -> None:
    if tune["id"] in GALLERY_IDS or tune["tenant"] != tenant:
        raise Unprocessable.on("base", "gallery tunes cannot be deleted")
    with services.store.begin() as tx:
        prompt_ids = tx.delete_tune(tenant, tune["id"])
    prefixes = [f"tunes/{tune['id']}", *(f"prompts/{pid}" for pid in prompt_ids)]
    for prefix in prefixes:
        await anyio.to_thread.run_sync(services.files.delete_prefix, prefix)
