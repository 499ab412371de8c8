"""The gallery's base checkpoints, present in every tenant with their real public ids."""

from __future__ import annotations

from typing import Any

REALISTIC_VISION_V51 = 690204
FLUX1_DEV = 1504944
GALLERY_IDS = frozenset({REALISTIC_VISION_V51, FLUX1_DEV})

_TRAINED = "2023-08-21T10:00:00.000Z"


def _checkpoint(tune_id: int, title: str, branch: str) -> dict[str, Any]:
    return {
        "id": tune_id,
        "tenant": "",
        "title": title,
        "model_type": None,
        "branch": branch,
        "attrs": {"name": None, "token": "ohwx" if branch != "sd15" else "sks", "is_api": False},
        "orig_images": [],
        "face_key": None,
        "created_at": _TRAINED,
        "updated_at": _TRAINED,
        "started_training_at": _TRAINED,
        "trained_at": _TRAINED,
        "eta": _TRAINED,
        "expires_at": None,
        "auto_extend": False,
        "ready_after": None,
    }


GALLERY_TUNES = (
    _checkpoint(REALISTIC_VISION_V51, "Realistic Vision v5.1", "sd15"),
    _checkpoint(FLUX1_DEV, "Flux1.dev", "flux1"),
)
