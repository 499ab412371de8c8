"""The only place that shapes API JSON: store rows in, the API's objects out.

Key order is fixed and encoding is compact, so equal state gives equal bytes.
"""

from __future__ import annotations

from typing import Any

from .store import Row

PROMPT_FLAGS = (
    "super_resolution",
    "face_correct",
    "face_swap",
    "hires_fix",
    "inpaint_faces",
    "use_lpw",
    "film_grain",
    "prompt_expansion",
    "controlnet_txt2img",
)
PROMPT_OPTIONALS = (
    "scheduler",
    "aspect_ratio",
    "ar",
    "controlnet",
    "denoising_strength",
    "controlnet_conditioning_scale",
    "style",
    "color_grading",
)


def file_url(base_url: str, key: str) -> str:
    return f"{base_url}/_mock/files/{key}"


def ref_url(base_url: str, ref: dict[str, str] | None) -> str | None:
    """A stored image reference (a file key of ours, or a URL the client gave) as a URL."""
    if ref is None:
        return None
    return file_url(base_url, ref["key"]) if "key" in ref else ref["url"]


def ckpt_url(base_url: str, row: Row) -> str | None:
    if row["trained_at"] is None or row["model_type"] == "faceid":
        return None
    return file_url(base_url, f"tunes/{row['id']}/model.safetensors")


def tune_json(row: Row, base_url: str) -> dict[str, Any]:
    attrs = row["attrs"]
    ckpt = ckpt_url(base_url, row)
    body: dict[str, Any] = {
        "id": row["id"],
        "title": row["title"],
        "name": attrs.get("name"),
        "is_api": attrs.get("is_api", True),
        "token": attrs.get("token"),
        "base_tune_id": attrs.get("base_tune_id"),
        "args": attrs.get("args"),
        "steps": attrs.get("steps"),
        "face_crop": attrs.get("face_crop"),
        "training_face_correct": attrs.get("training_face_correct"),
        "ckpt_url": ckpt,
        "ckpt_urls": [ckpt] if ckpt else [],
        "eta": row["eta"],
        "trained_at": row["trained_at"],
        "started_training_at": row["started_training_at"],
        "expires_at": row["expires_at"],
        "created_at": row["created_at"],
        "branch": row["branch"],
        "model_type": row["model_type"],
        "updated_at": row["updated_at"],
        "url": f"{base_url}/tunes/{row['id']}.json",
        "orig_images": [ref_url(base_url, ref) for ref in row["orig_images"]],
        "callback": attrs.get("callback"),
        "auto_extend": attrs.get("auto_extend", False),
        "characteristics": attrs.get("characteristics") or {},
        "preset": attrs.get("preset"),
    }
    return body


def prompt_json(row: Row, base_url: str) -> dict[str, Any]:
    attrs = row["attrs"]
    pid = row["id"]
    body: dict[str, Any] = {
        "id": pid,
        "callback": attrs.get("callback"),
        "text": attrs["text"],
        "negative_prompt": attrs.get("negative_prompt"),
        "cfg_scale": attrs.get("cfg_scale"),
        "steps": attrs.get("steps"),
        "seed": attrs.get("seed"),
        "trained_at": row["trained_at"],
        "started_training_at": row["started_training_at"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "tune_id": row["tune_id"],
        "url": f"{base_url}/tunes/{row['tune_id']}/prompts/{pid}.json",
        "images": [
            file_url(base_url, f"prompts/{pid}/{index}.jpg") for index in range(row["image_count"])
        ],
        "user_error": row["user_error"],
        "num_images": attrs.get("num_images", 1),
        "w": attrs.get("w"),
        "h": attrs.get("h"),
    }
    for name in PROMPT_OPTIONALS:
        body[name] = attrs.get(name)
    for name in PROMPT_FLAGS:
        body[name] = bool(attrs.get(name, False))
    body["input_image"] = ref_url(base_url, attrs.get("input_image"))
    body["mask_image"] = ref_url(base_url, attrs.get("mask_image"))
    body["liked"] = bool(row["liked"])
    return body
