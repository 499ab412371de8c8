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
from .store import Row, Tx

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


def _check_and_stage(files: FileStore, uploads: list[bytes]) -> tuple[str, list[str]]:
    """In a worker thread: check every upload (the first bad one is a 422), then stage
    them all (``FileStore.stage_uploads``); returns the staging and the files' names."""
    infos = _inspect_all(uploads)
    names = [f"{index}.{EXTENSIONS[info.format]}" for index, info in enumerate(infos)]
    return files.stage_uploads(list(zip(names, uploads, strict=True))), names


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
    """The whole create call; the tune and its ``prompts_attributes`` land in one
    transaction. The photos are checked and staged first, in one hop to a worker thread,
    and take their keys (``tunes/<id>/``) in the transaction that numbers the tune."""
    uploads = [_image_bytes(item, i) for i, item in enumerate(fields.get("images") or [])]
    if not uploads and not fields.get("image_urls"):
        raise Unprocessable.on("images", "can't be blank (send images or image_urls)")
    check_callback_url(fields.get("callback"), services.settings.callback_allow)
    staged: str | None = None
    names: list[str] = []
    if uploads:
        staged, names = await anyio.to_thread.run_sync(
            _check_and_stage, services.files, uploads, limiter=services.upload_thread
        )
    taken = False
    try:
        row, taken = await _create(services, tenant, fields, staged, names)
    finally:
        if staged is not None and not taken:  # no tune took the photos
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(services.files.discard, staged)
    return row


async def _create(
    services: Services, tenant: str, fields: dict[str, Any], staged: str | None, names: list[str]
) -> tuple[Row, bool]:
    """The tune as answered, and whether the staged photos were taken (adopted, or
    deleted with the files of a tune that lost to another of the same title)."""
    with services.store.begin() as tx:
        if services.settings.idempotency:
            existing = tx.tune_by_key(tenant, fields["title"])
            if existing is not None:
                return existing, False
        base = None
        if fields.get("base_tune_id") is not None and fields.get("model_type") != "faceid":
            base = tx.tune(tenant, fields["base_tune_id"])
            if base is None:
                message = f"refers to tune {fields['base_tune_id']}, which does not exist"
                raise Unprocessable.on("base_tune_id", message)
        tune = _tune_row(services, tenant, fields, base, tx.next_id("tunes", skip=GALLERY_IDS))
        keys = [f"tunes/{tune['id']}/{name}" for name in names]
        tune["orig_images"] = [{"key": key} for key in keys]
        tune["orig_images"] += [{"url": url} for url in fields.get("image_urls") or []]
        if tune["model_type"] == "faceid" and keys:
            # The first upload is the face. The placeholder renderer fits it (decoded at a
            # reduced scale, once per tune and size), so creating a tune decodes no pixels.
            tune["face_key"] = keys[0]
        drafts: list[tuple[int, PromptDraft]] = []
        for index, prompt_fields in enumerate(fields.get("prompts_attributes") or []):
            prompt_id = tx.next_id("prompts")
            try:
                draft = draft_prompt(services, tx, tenant, tune, prompt_fields)
            except Unprocessable as exc:
                prefixed = {f"prompts_attributes[{index}].{k}": v for k, v in exc.fields.items()}
                raise Unprocessable(prefixed) from None
            drafts.append((prompt_id, draft.numbered(tenant, prompt_id)))
        with_files = any(draft.uploads for _, draft in drafts)
        if not with_files:
            stored = _store(services, tx, tenant, tune, drafts, staged)
    if with_files:
        # A prompt's input image is checked and stored under the prompt's id: in
        # between two transactions, the first of which took the ids.
        for _, draft in drafts:
            await check_uploads(draft)
        if staged is not None:
            await anyio.to_thread.run_sync(services.files.adopt, staged, f"tunes/{tune['id']}")
        for prompt_id, draft in drafts:
            await store_uploads(services, prompt_id, draft)
        with services.store.begin() as tx:
            stored = _store(services, tx, tenant, tune, drafts, None)
    row, queued = stored
    if row is not tune:  # the same title was created meanwhile
        prefixes = [f"prompts/{pid}" for pid, _ in drafts]
        if with_files:
            prefixes.append(f"tunes/{tune['id']}")
        for prefix in prefixes:
            await anyio.to_thread.run_sync(services.files.delete_prefix, prefix)
        return row, with_files
    services.outbox.committed(queued)  # a callback: its delivery starts now
    if drafts or row["trained_at"] is None:
        # Only then is there work for the lifecycle (training, prompts); each wake-up
        # costs a pass of queries on the event loop.
        services.wake(None)
    return row, True


def _store(
    services: Services,
    tx: Tx,
    tenant: str,
    tune: dict[str, Any],
    drafts: list[tuple[int, PromptDraft]],
    staged: str | None,
) -> tuple[Row, Row | None]:
    """Insert the tune and its prompts; the staged photos take their keys (a rename)
    before the commit. Returns the tune and its callback, queued; or, when the same
    title was created meanwhile (on this or another replica), that tune and None."""
    if not tx.insert_tune(tune):
        existing = tx.tune_by_key(tenant, tune["title"])
        assert existing is not None
        return existing, None
    for prompt_id, draft in drafts:
        tx.insert_prompt(prompt_row(services, tenant, tune, prompt_id, draft))
    if staged is not None:
        services.files.adopt(staged, f"tunes/{tune['id']}")
    queued = services.outbox.tune_ready(tx, tune) if tune["trained_at"] is not None else None
    return tune, queued


def _tune_row(
    services: Services, tenant: str, fields: dict[str, Any], base: Row | None, tune_id: int
) -> dict[str, Any]:
    """The new tune, as stored (every column), but for its images."""
    branch, model_type = _branch_and_type(fields, base)
    now = services.clock.now()
    stamp = iso(now)
    training = timedelta(seconds=services.settings.train_seconds)
    ready_now = model_type == "faceid" or branch == "fast"
    attrs = {name: fields[name] for name in TUNE_FIELDS if name in fields}
    attrs["token"] = fields.get("token") or _default_token(branch, model_type)
    attrs["is_api"] = True
    if model_type == "faceid":
        attrs["steps"] = None
        attrs["training_face_correct"] = False
    return {
        "id": tune_id,
        "tenant": tenant,
        "title": fields["title"],
        "model_type": model_type,
        "branch": branch,
        "attrs": attrs,
        "orig_images": [],
        "face_key": None,
        "created_at": stamp,
        "updated_at": stamp,
        "started_training_at": stamp,
        "trained_at": stamp if ready_now else None,
        "eta": stamp if ready_now else iso(now + training),
        "expires_at": iso(now + EXPIRY) if ready_now else None,
        "auto_extend": bool(fields.get("auto_extend")),
        "ready_after": None if ready_now else time.time() + training.total_seconds(),
        "claimed_until": None,
        "idem_key": fields["title"] if services.settings.idempotency else None,
    }


async def delete_tune(services: Services, tenant: str, tune: Row) -> None:
    if tune["id"] in GALLERY_IDS or tune["tenant"] != tenant:
        raise Unprocessable.on("base", "gallery tunes cannot be deleted")
    with services.store.begin() as tx:
        prompt_ids = tx.delete_tune(tenant, tune["id"])
    prefixes = [f"tunes/{tune['id']}", *(f"prompts/{pid}" for pid in prompt_ids)]
    for prefix in prefixes:
        await anyio.to_thread.run_sync(services.files.delete_prefix, prefix)
