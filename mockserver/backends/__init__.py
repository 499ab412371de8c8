"""Generation backends: what turns a prompt into image files.

A backend is called from a worker thread, never on the event loop. The
placeholder backend is the default; the diffusers backend (``--backend
diffusers``, the ``gpu`` extra) is optional, and nothing of torch is imported
unless it is chosen.

A backend may set ``concurrency``: the most generations the lifecycle runs at
once with it (4 when it sets none). The diffusers backend sets one per pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .errors import BackendError, BackendUnavailable, GenerationError, MissingWeights

__all__ = [
    "BACKENDS",
    "OPTION_FIELDS",
    "Backend",
    "BackendError",
    "BackendUnavailable",
    "FaceRef",
    "Generated",
    "GenerationError",
    "GenerationJob",
    "MissingWeights",
    "load_backend",
]

BACKENDS = ("placeholder", "diffusers")

OPTION_FIELDS = (
    "super_resolution", "inpaint_faces", "hires_fix", "face_correct", "face_swap", "use_lpw",
    "film_grain", "prompt_expansion", "style", "color_grading", "controlnet",
    "controlnet_conditioning_scale", "controlnet_txt2img", "denoising_strength", "input_image",
    "mask_image",
)  # fmt: skip
"""Prompt fields that change the picture beyond text, size, seed, scheduler, steps and cfg:
the lifecycle hands those that were asked for to the backend as ``GenerationJob.options``."""


@dataclass(frozen=True, slots=True)
class FaceRef:
    """A ``<faceid:ID:S>`` tag resolved: the tune's face image and the strength."""

    tune_id: int
    strength: float
    face: bytes | None


@dataclass(frozen=True, slots=True)
class GenerationJob:
    prompt_id: int
    tune_id: int
    text: str
    negative_prompt: str | None
    width: int
    height: int
    seeds: tuple[int, ...]
    scheduler: str | None
    cfg_scale: float | None
    steps: int | None
    faces: tuple[FaceRef, ...]
    options: tuple[tuple[str, object], ...] = ()
    """Other options asked for (``OPTION_FIELDS``, ``<lora:...>`` tags), by name: each
    backend honours what it can and notes the rest."""


@dataclass(frozen=True, slots=True)
class Generated:
    images: tuple[bytes, ...]
    """One encoded image per seed, in order."""
    notes: tuple[str, ...] = ()
    """What the backend could not honour; the lifecycle logs each with the prompt id."""


class Backend(Protocol):
    def generate(self, job: GenerationJob) -> Generated:
        """One encoded image per seed, in order, and notes."""
        ...


def load_backend(
    name: str, weights: Path | None, cache_dir: Path | None, *, eager: bool = True
) -> Backend:
    """The backend called ``name``; ``cache_dir`` keeps what it computes once per tune
    (None: memory only). Raises ``BackendError`` when it cannot start. Its files and
    packages are checked now; with ``eager`` off (a process that renders only on an admin
    call) its models load on first use."""
    if name == "placeholder":
        from .placeholder import PlaceholderBackend

        return PlaceholderBackend()
    if name == "diffusers":
        if weights is None:
            raise BackendError("--backend diffusers needs --weights DIR (see docs/gpu.md)")
        from .diffusers import prepare_diffusers_backend

        return prepare_diffusers_backend(weights, cache_dir, eager=eager)
    raise BackendError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
