"""One Stable Diffusion 1.5 pipeline with IP-Adapter FaceID, on one device.

Loaded from local files only. The FaceID file brings a LoRA beside its image
projection: diffusers loads it through peft as the adapter ``faceid_0``, and
without peft drops it with a mere warning, so peft is checked first and the adapter
is checked after loading. The LCM-LoRA, when present, is the adapter ``lcm``; the
few-step schedulers run with both adapters active.

A pipeline holds per-call state (scheduler, adapters, FaceID scale): one call at a
time, which its lock enforces.
"""

from __future__ import annotations

import threading
from typing import Any

from ..errors import BackendError, BackendUnavailable
from .faces import Embedding
from .layout import FACEID_FILE, Weights
from .plan import Plan
from .schedulers import make_scheduler

FACEID_ADAPTER = "faceid_0"
LCM_ADAPTER = "lcm"


def check_peft() -> None:
    """Raise unless diffusers runs with its peft backend (else the FaceID LoRA is lost)."""
    from diffusers.utils import USE_PEFT_BACKEND

    if not USE_PEFT_BACKEND:
        raise BackendUnavailable(
            "the diffusers backend needs peft (pip install 'astria-mock[gpu]'): without it "
            "diffusers silently drops the LoRA inside ip-adapter-faceid_sd15.bin"
        )


def _base_pipeline(weights: Weights, dtype: Any) -> Any:
    import diffusers.utils.logging
    import transformers.utils.logging
    from diffusers import StableDiffusionPipeline

    diffusers.utils.logging.disable_progress_bar()  # a server log has no use for them
    transformers.utils.logging.disable_progress_bar()

    options: dict[str, Any] = {
        "dtype": dtype,
        "local_files_only": True,
        "safety_checker": None,
        "feature_extractor": None,
        "requires_safety_checker": False,
    }
    if weights.base_config is not None:
        return StableDiffusionPipeline.from_single_file(
            str(weights.base), config=str(weights.base_config), **options
        )
    return StableDiffusionPipeline.from_pretrained(str(weights.base), **options)


class FaceIdPipeline:
    def __init__(self, pipe: Any, device: str, has_lcm_lora: bool) -> None:
        self.pipe = pipe
        self.device = device
        self.has_lcm_lora = has_lcm_lora
        self.active: tuple[str, ...] = ()
        """The LoRA adapters of the last call."""
        self._scheduler_config = pipe.scheduler.config
        projection = pipe.unet.encoder_hid_proj.image_projection_layers[0]
        self.embedding_size = int(projection.ff.net[0].proj.in_features)
        self._lock = threading.Lock()

    @classmethod
    def load(cls, weights: Weights, device: str, dtype: Any) -> FaceIdPipeline:
        check_peft()
        try:
            pipe = _base_pipeline(weights, dtype)
            pipe.load_ip_adapter(
                str(weights.root),
                subfolder="",
                weight_name=FACEID_FILE,
                image_encoder_folder=None,
                local_files_only=True,
            )
            if weights.lcm_lora is not None:
                pipe.load_lora_weights(
                    str(weights.lcm_lora.parent),
                    weight_name=weights.lcm_lora.name,
                    adapter_name=LCM_ADAPTER,
                    local_files_only=True,
                )
            pipe.to(device)
        except Exception as exc:  # any load failure is a startup error, with its cause
            raise BackendError(f"cannot load the weights in {weights.root}: {exc}") from exc
        adapters = pipe.get_list_adapters().get("unet", [])
        if FACEID_ADAPTER not in adapters:
            raise BackendError(
                f"{FACEID_FILE} loaded without its LoRA (adapters found: {adapters}); "
                "is it the FaceID file for SD 1.5?"
            )
        pipe.set_progress_bar_config(disable=True)
        return cls(pipe, device, weights.lcm_lora is not None)

    def configure(self, plan: Plan) -> None:
        """Scheduler, LoRA adapters and FaceID scale for ``plan``."""
        pipe = self.pipe
        pipe.scheduler = make_scheduler(plan.scheduler, self._scheduler_config)
        adapters = []
        if plan.face is not None:
            adapters.append(FACEID_ADAPTER)
        if plan.lcm_lora:
            adapters.append(LCM_ADAPTER)
        if adapters:
            pipe.enable_lora()
            pipe.set_adapters(adapters, adapter_weights=[1.0] * len(adapters))
        else:
            pipe.disable_lora()
        pipe.set_ip_adapter_scale(plan.face.strength if plan.face is not None else 0.0)
        self.active = tuple(adapters)

    def _embeds(self, embedding: Embedding | None, cfg_scale: float) -> Any:
        """The FaceID conditioning as the pipeline takes it: a zero negative beside the
        face when classifier-free guidance is on (cfg_scale > 1)."""
        import torch

        dtype = self.pipe.unet.dtype
        if embedding is None:
            face = torch.zeros(1, 1, self.embedding_size)
        else:
            face = torch.as_tensor(embedding, dtype=torch.float32).reshape(1, 1, -1)
        if cfg_scale > 1:
            face = torch.cat([torch.zeros_like(face), face])
        return face.to(self.device, dtype)

    def run(self, plan: Plan, embedding: Embedding | None) -> list[Any]:
        """PIL images, one per seed; image i depends only on seed i."""
        import torch

        with self._lock:
            self.configure(plan)
            generators = [torch.Generator("cpu").manual_seed(seed) for seed in plan.seeds]
            with torch.inference_mode():
                output = self.pipe(
                    prompt=plan.prompt,
                    negative_prompt=plan.negative_prompt,
                    width=plan.width,
                    height=plan.height,
                    num_inference_steps=plan.steps,
                    guidance_scale=plan.cfg_scale,
                    num_images_per_prompt=len(plan.seeds),
                    generator=generators,
                    ip_adapter_image_embeds=[self._embeds(embedding, plan.cfg_scale)],
                    output_type="pil",
                )
            return list(output.images)
