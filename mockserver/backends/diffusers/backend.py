"""The diffusers backend: a pool of FaceID pipelines, one per GPU, and the face cache.

``generate`` runs in a lifecycle worker thread: it computes (or reads) the face
embedding, takes a free pipeline, renders every image of the prompt in one batch,
and encodes them as JPEG. ``concurrency`` is the number of pipelines, so the
lifecycle never queues more work on a GPU than it can run.
"""

from __future__ import annotations

import io
import logging
import queue
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import Generated, GenerationJob
from .faces import EmbeddingCache, FaceEncoder, InsightFaceEncoder
from .layout import Weights
from .pipeline import FaceIdPipeline
from .plan import make_plan

log = logging.getLogger("astria_mock.diffusers")
JPEG_QUALITY = 92


def devices() -> list[str]:
    """Every CUDA device, else the CPU."""
    import torch

    if torch.cuda.is_available():
        return [f"cuda:{index}" for index in range(torch.cuda.device_count())]
    return ["cpu"]


def dtype_for(device: str) -> Any:
    import torch

    return torch.float16 if device.startswith("cuda") else torch.float32


def jpeg(image: Any) -> bytes:
    out = io.BytesIO()
    image.convert("RGB").save(out, "JPEG", quality=JPEG_QUALITY)
    return out.getvalue()


class DiffusersBackend:
    def __init__(self, pipelines: Sequence[FaceIdPipeline], faces: EmbeddingCache) -> None:
        self.pipelines = tuple(pipelines)
        self.faces = faces
        self.concurrency = len(self.pipelines)
        self.has_lcm_lora = all(p.has_lcm_lora for p in self.pipelines)
        self._free: queue.SimpleQueue[FaceIdPipeline] = queue.SimpleQueue()
        for pipeline in self.pipelines:
            self._free.put(pipeline)

    @classmethod
    def load(
        cls,
        weights: Weights,
        cache_dir: Path | None,
        on: Sequence[str] | None = None,
        encoder: FaceEncoder | None = None,
    ) -> DiffusersBackend:
        """Pipelines on the devices ``on`` (default: every GPU, else the CPU)."""
        started = time.monotonic()
        pipelines = [
            FaceIdPipeline.load(weights, device, dtype_for(device)) for device in on or devices()
        ]
        faces = EmbeddingCache(encoder or InsightFaceEncoder(weights.faces), cache_dir)
        log.info(
            "diffusers backend: %s from %s in %.1f s (LCM-LoRA: %s)",
            ", ".join(p.device for p in pipelines),
            weights.root,
            time.monotonic() - started,
            "yes" if weights.lcm_lora else "no",
        )
        return cls(pipelines, faces)

    def generate(self, job: GenerationJob) -> Generated:
        plan = make_plan(job, has_lcm_lora=self.has_lcm_lora)
        face = plan.face
        embedding = None
        if face is not None and face.face is not None:
            embedding = self.faces.get(face.tune_id, face.face)
        pipeline = self._free.get()
        started = time.monotonic()
        try:
            images = pipeline.run(plan, embedding)
        finally:
            self._free.put(pipeline)
        log.info(
            "prompt %s: %d images %dx%d, %s, %d steps, cfg %g, faceid %s, %.2f s on %s",
            job.prompt_id,
            len(images),
            plan.width,
            plan.height,
            plan.scheduler,
            plan.steps,
            plan.cfg_scale,
            f"{face.tune_id}:{face.strength:g}" if face is not None else "none",
            time.monotonic() - started,
            pipeline.device,
        )
        return Generated(tuple(jpeg(image) for image in images), plan.notes)
