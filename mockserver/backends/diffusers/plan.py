"""A prompt's job as pipeline arguments, and notes on what cannot be honoured.

Pure: no model library here, so the mapping is the same on every machine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .. import FaceRef, GenerationJob
from .schedulers import DEFAULT_SCHEDULER, SCHEDULERS

TAG = re.compile(r"<(?:faceid|lora):[^<>]*>")
STEPS = 30
FEW_STEPS = 6
CFG_SCALE = 7.0
FEW_STEP_CFG_SCALE = 1.5
BASE_TUNE_ID = 690204
"""The gallery's SD 1.5 checkpoint (Realistic Vision v5.1), which the weights folder stands for."""


@dataclass(frozen=True, slots=True)
class Plan:
    prompt: str
    """The text without its adapter tags."""
    negative_prompt: str | None
    width: int
    height: int
    seeds: tuple[int, ...]
    scheduler: str
    """A key of ``SCHEDULERS``."""
    steps: int
    cfg_scale: float
    face: FaceRef | None
    """The face to condition on: the first ``<faceid>`` tag that has an image."""
    lcm_lora: bool
    notes: tuple[str, ...]


def _shown(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "(given)"
    return str(value)


def make_plan(job: GenerationJob, *, has_lcm_lora: bool) -> Plan:
    notes = [
        f"{name}={_shown(value)} is not honoured by the diffusers backend (ignored)"
        for name, value in job.options
    ]
    if job.tune_id != BASE_TUNE_ID:
        notes.append(
            f"tune {job.tune_id} is rendered with the weights folder's SD 1.5 base model "
            f"(the gallery's {BASE_TUNE_ID})"
        )
    scheduler = job.scheduler or DEFAULT_SCHEDULER
    if scheduler not in SCHEDULERS:
        notes.append(f"scheduler {scheduler!r} is unknown; {DEFAULT_SCHEDULER} used instead")
        scheduler = DEFAULT_SCHEDULER
    few_step = SCHEDULERS[scheduler].few_step
    if few_step and not has_lcm_lora:
        notes.append(
            f"scheduler {scheduler} needs the LCM-LoRA, which the weights folder lacks; "
            f"{DEFAULT_SCHEDULER} used instead"
        )
        scheduler, few_step = DEFAULT_SCHEDULER, False
    faces = [ref for ref in job.faces if ref.face is not None]
    notes.extend(
        f"FaceID tune {ref.tune_id} has no face image; its tag is ignored"
        for ref in job.faces
        if ref.face is None
    )
    notes.extend(
        f"<faceid:{ref.tune_id}:{ref.strength:g}> ignored: one face per prompt, the first is used"
        for ref in faces[1:]
    )
    default_steps, default_cfg = (FEW_STEPS, FEW_STEP_CFG_SCALE) if few_step else (STEPS, CFG_SCALE)
    return Plan(
        prompt=" ".join(TAG.sub(" ", job.text).split()),
        negative_prompt=job.negative_prompt or None,
        width=job.width,
        height=job.height,
        seeds=job.seeds,
        scheduler=scheduler,
        steps=job.steps or default_steps,
        cfg_scale=float(job.cfg_scale) if job.cfg_scale is not None else default_cfg,
        face=faces[0] if faces else None,
        lcm_lora=few_step,
        notes=tuple(notes),
    )
