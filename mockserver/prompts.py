"""Prompt rules: adapter tags, placeholders, sizes, seeds, idempotency, creation."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread

from .bodies import UploadedFile
from .callbacks import check_callback_url
from .errors import FACEID_NOT_SUPPORTED, Unprocessable
from .images import InvalidImage, inspect_upload
from .lookup import found_tune, remembered_tune
from .reads import RecentReads
from .services import Services
from .store import Row, Tx

TAG = re.compile(r"<(faceid|lora):([^<>]*)>")
PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}")
MAX_STRENGTH = 2.0
BASE_EDGE = {"sd15": 512, "sdxl1": 1024, "flux1": 1024, "fast": 512}
LEGACY_RATIOS = {"1:1": "1:1", "portrait": "2:3", "16:9": "16:9", "landscape": "3:2"}
IDEMPOTENCY_FIELDS = (
    "text", "tune_id", "cfg_scale", "steps", "seed", "callback", "negative_prompt",
    "super_resolution", "face_correct", "ar", "num_images", "controlnet",
    "denoising_strength", "use_lpw", "controlnet_conditioning_scale", "w", "h", "hires_fix",
    "scheduler", "controlnet_txt2img", "inpaint_faces",
)  # fmt: skip
FILE_FIELDS = ("input_image", "mask_image")
NOT_ATTRS = frozenset({*FILE_FIELDS, "input_image_base64"})
"""Fields stored as files, not as attributes."""


@dataclass(slots=True)
class PromptDraft:
    """A prompt that passed every rule, ready to be stored."""

    attrs: dict[str, Any]
    uploads: dict[str, bytes] = field(default_factory=dict)
    idem_key: str = ""

    def numbered(self, tenant: str, prompt_id: int) -> PromptDraft:
        """The draft of prompt ``prompt_id``: a seed not given is derived from the id."""
        if self.attrs["seed"] is None:
            self.attrs["seed"] = derive_seed(tenant, prompt_id)
        return self


def _tag_error(tag: str, message: str) -> Unprocessable:
    return Unprocessable.on("text", f"{tag} {message}")


def resolve_tags(
    reads: RecentReads, tx: Tx, tenant: str, text: str
) -> tuple[list[dict[str, Any]], list[Mapping[str, Any]]]:
    """Check each ``<faceid:ID:S>`` / ``<lora:ID:S>`` tag; returns the refs and their tunes
    (read through ``reads``: ``tx`` changes no tune it tags)."""
    refs: list[dict[str, Any]] = []
    tunes: list[Mapping[str, Any]] = []
    for match in TAG.finditer(text):
        tag, kind, inner = match.group(0), match.group(1), match.group(2)
        parts = inner.split(":")
        if len(parts) != 2 or not parts[0].strip().isdigit():
            raise _tag_error(tag, f"is malformed; write <{kind}:TUNE_ID:STRENGTH>")
        tune_id = int(parts[0])
        try:
            strength = float(parts[1])
        except ValueError:
            strength = math.nan
        if not 0 <= strength <= MAX_STRENGTH:
            raise _tag_error(
                tag, f"has a bad strength {parts[1]!r}; use a number 0..{MAX_STRENGTH:g}"
            )
        stored = remembered_tune(reads, tenant, tune_id, tx)
        if stored is None:
            raise _tag_error(tag, f"refers to tune {tune_id}, which does not exist")
        tune = stored.fields()
        if kind == "faceid" and tune["model_type"] != "faceid":
            raise _tag_error(tag, f"refers to tune {tune_id}, which is not a FaceID tune")
        if kind == "lora" and tune["model_type"] not in ("lora", "pti"):
            raise _tag_error(tag, f"refers to tune {tune_id}, which is not a LoRA tune")
        refs.append({"kind": kind, "tune_id": tune_id, "strength": strength})
        tunes.append(tune)
    return refs, tunes


def fill_placeholders(text: str, tunes: list[Mapping[str, Any]]) -> str:
    """``{{key}}`` from the characteristics of the prompted and the tagged tunes."""
    values: dict[str, str] = {}
    for tune in tunes:
        values.update(
            {str(k): str(v) for k, v in (tune["attrs"].get("characteristics") or {}).items()}
        )
    return PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), text)


def image_size(fields: dict[str, Any], branch: str) -> tuple[int, int]:
    width, height = fields.get("w"), fields.get("h")
    if width and height:
        return int(width), int(height)
    ratio = fields.get("aspect_ratio") or LEGACY_RATIOS.get(fields.get("ar") or "", "1:1")
    a, b = (int(x) for x in ratio.split(":"))
    edge = BASE_EDGE.get(branch, 512)
    computed_w = int(round(edge * math.sqrt(a / b) / 8) * 8)
    computed_h = int(round(edge * math.sqrt(b / a) / 8) * 8)
    if width:
        return int(width), int(round(int(width) * b / a / 8) * 8) or 8
    if height:
        return int(round(int(height) * a / b / 8) * 8) or 8, int(height)
    return computed_w, computed_h


def derive_seed(*parts: object) -> int:
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big")


def idempotency_key(tune_id: int, attrs: dict[str, Any], given_seed: int | None) -> str:
    compared = {name: attrs.get(name) for name in IDEMPOTENCY_FIELDS}
    compared["tune_id"] = tune_id
    compared["seed"] = given_seed
    return hashlib.sha256(json.dumps(compared, sort_keys=True).encode()).hexdigest()


def decode_data_url(value: str, field_name: str) -> bytes:
    header, _, payload = value.partition(",")
    if not header.startswith("data:image/") or ";base64" not in header:
        raise Unprocessable.on(field_name, "must be a data URL: data:image/...;base64,...")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise Unprocessable.on(field_name, "is not valid base64") from None


def _check_image(data: bytes, field_name: str) -> None:
    try:
        inspect_upload(data)
    except InvalidImage as exc:
        raise Unprocessable.on(field_name, str(exc)) from None


def draft_prompt(
    services: Services,
    tx: Tx,
    tenant: str,
    tune: Mapping[str, Any],
    fields: dict[str, Any],
) -> PromptDraft:
    """Apply every prompt rule (without storing); uploads are checked by ``check_uploads``.
    The draft is ``numbered`` once the prompt's id is taken."""
    check_callback_url(fields.get("callback"), services.settings.callback_allow)
    if tune["model_type"] == "faceid":
        raise Unprocessable.on("base", FACEID_NOT_SUPPORTED)
    for flag in ("inpaint_faces", "hires_fix"):
        if fields.get(flag) and not fields.get("super_resolution"):
            raise Unprocessable.on(flag, "requires super_resolution")
    has_input = any(fields.get(n) for n in ("input_image", "input_image_url", "input_image_base64"))
    if fields.get("controlnet") and not has_input:
        raise Unprocessable.on(
            "controlnet", "needs an input image: input_image, input_image_url or input_image_base64"
        )
    refs, tagged = resolve_tags(services.reads, tx, tenant, fields["text"])
    attrs = {k: v for k, v in fields.items() if k not in NOT_ATTRS}
    attrs["text"] = fill_placeholders(fields["text"], [tune, *tagged])
    attrs["num_images"] = fields.get("num_images") or 1
    given_seed = fields.get("seed")
    attrs["seed"] = given_seed  # or, when None, derived from the id (numbered)
    attrs["width"], attrs["height"] = image_size(fields, tune["branch"])
    attrs["adapters"] = refs
    draft = PromptDraft(attrs)
    if services.settings.idempotency:  # the key is stored and looked up only then
        draft.idem_key = idempotency_key(tune["id"], attrs, given_seed)
    for name in FILE_FIELDS:
        value = fields.get(name)
        if isinstance(value, UploadedFile):
            draft.uploads[name] = value.data
        elif isinstance(value, str) and value:
            draft.uploads[name] = decode_data_url(value, name)
    if fields.get("input_image_base64"):
        draft.uploads["input_image"] = decode_data_url(
            fields["input_image_base64"], "input_image_base64"
        )
    for name, url_field in (("input_image", "input_image_url"), ("mask_image", "mask_image_url")):
        if name not in draft.uploads and fields.get(url_field):
            attrs[name] = {"url": fields[url_field]}
    return draft


async def check_uploads(draft: PromptDraft) -> None:
    """Decode each uploaded image off the event loop; a bad one is a 422."""
    for name, data in draft.uploads.items():
        await anyio.to_thread.run_sync(_check_image, data, name)


async def store_uploads(services: Services, prompt_id: int, draft: PromptDraft) -> None:
    for name, data in draft.uploads.items():
        key = f"prompts/{prompt_id}/{name}"
        await anyio.to_thread.run_sync(services.files.put_upload, key, data)
        draft.attrs[name] = {"key": key}


def prompt_row(
    services: Services, tenant: str, tune: Mapping[str, Any], prompt_id: int, draft: PromptDraft
) -> dict[str, Any]:
    """The new row: pending, due ``--prompt-seconds`` after its tune is trained."""
    settings = services.settings
    now = services.clock.stamp()
    start = time.time()
    if tune["trained_at"] is None and tune["ready_after"] is not None:
        start = max(start, float(tune["ready_after"]))
    polling = settings.prompt_polls is not None
    return {
        "id": prompt_id,
        "tenant": tenant,
        "tune_id": tune["id"],
        "attrs": draft.attrs,
        "idem_key": draft.idem_key if settings.idempotency else None,
        "created_at": now,
        "updated_at": now,
        "started_training_at": None,
        "trained_at": None,
        "ready_after": None if polling else start + settings.prompt_seconds,
        "image_count": 0,
        "user_error": None,
        "polls": 0,
        "liked": False,
    }


async def create_prompt(
    services: Services, tenant: str, tune_id: int, fields: dict[str, Any]
) -> Row:
    """The whole create call: rules, idempotency, uploads, one insert. Without uploads it
    is one transaction; uploads are checked and stored between two."""
    async with services.store.grouped() as tx:
        # The tunes are read through services.reads: this transaction changes none.
        tune = found_tune(remembered_tune(services.reads, tenant, tune_id, tx), tune_id).fields()
        draft = draft_prompt(services, tx, tenant, tune, fields)
        prompt_id = tx.next_id("prompts")
        draft.numbered(tenant, prompt_id)
        if services.settings.idempotency:
            existing = tx.prompt_by_key(tenant, draft.idem_key)
            if existing is not None:
                return existing
        if not draft.uploads:
            row = _insert(services, tx, tenant, tune, prompt_id, draft)
    if draft.uploads:
        await check_uploads(draft)
        await store_uploads(services, prompt_id, draft)
        with services.store.begin() as tx:
            row = _insert(services, tx, tenant, tune, prompt_id, draft)
        if row["id"] != prompt_id:
            await anyio.to_thread.run_sync(services.files.delete_prefix, f"prompts/{prompt_id}")
    if row["id"] == prompt_id and row["ready_after"] is not None:
        services.wake(row["ready_after"])
    return row


def _insert(
    services: Services,
    tx: Tx,
    tenant: str,
    tune: Mapping[str, Any],
    prompt_id: int,
    draft: PromptDraft,
) -> Row:
    """Store the prompt; returns its row as stored. Not inserted: the same prompt was
    created meanwhile (on this or another replica), and that one is returned."""
    row = prompt_row(services, tenant, tune, prompt_id, draft)
    if tx.insert_prompt(row):
        return row
    existing = tx.prompt_by_key(tenant, draft.idem_key)
    assert existing is not None
    return existing
