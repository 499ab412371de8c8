"""The default backend: deterministic Pillow images that show what was asked."""

from __future__ import annotations

from ..images import Placeholder, render_placeholder
from . import Generated, GenerationJob


class PlaceholderBackend:
    concurrency = 4

    def generate(self, job: GenerationJob) -> Generated:
        face = next((ref.face for ref in job.faces if ref.face is not None), None)
        parts = [f"tune {job.tune_id}"]
        if job.scheduler:
            parts.append(job.scheduler)
        if job.cfg_scale is not None:
            parts.append(f"cfg {job.cfg_scale:g}")
        if job.faces:
            parts.append("faceid " + ",".join(f"{r.tune_id}:{r.strength:g}" for r in job.faces))
        images = []
        for index, seed in enumerate(job.seeds):
            caption = " · ".join([*parts, f"seed {seed}", f"{index + 1}/{len(job.seeds)}"])
            spec = Placeholder(
                width=job.width,
                height=job.height,
                seed=seed,
                index=index,
                text=job.text,
                caption=caption,
                face=face,
            )
            images.append(render_placeholder(spec))
        return Generated(tuple(images))
