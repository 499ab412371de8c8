"""Generation backends: what turns a prompt into image files.

A backend is called from a worker thread, never on the event loop. The
placeholder backend is the default; the diffusers backend is optional.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


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


class Backend(Protocol):
    def generate(self, job: GenerationJob) -> list[bytes]:
        """One encoded image per seed, in order."""
        ...
