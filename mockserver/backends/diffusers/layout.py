"""The weights folder: what must be in it, found before any model library loads.

    WEIGHTS/
    ├── base/                          the SD 1.5 checkpoint in diffusers layout
    │   ├── model_index.json              (e.g. Realistic Vision v5.1)
    │   ├── unet/  vae/  text_encoder/    config.json + weights (.safetensors or .bin)
    │   ├── tokenizer/                    vocab.json + merges.txt (or tokenizer.json)
    │   └── scheduler/                    scheduler_config.json
    │   ... or, instead of base/:
    ├── base.safetensors               the checkpoint as one file, with
    ├── base-config/                   the same folder as base/ without its weights
    ├── ip-adapter-faceid_sd15.bin     IP-Adapter FaceID for SD 1.5
    ├── buffalo_l/                     insightface's model pack: det_10g.onnx, w600k_r50.onnx
    └── lcm-lora-sdv1-5.safetensors    optional: LCM-LoRA (for the lcm and tcd schedulers);
                                       or lcm-lora-sdv1-5/pytorch_lora_weights.safetensors

Every missing item is named in one ``MissingWeights`` error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import MissingWeights

BASE_FOLDER = "base"
BASE_FILE = "base.safetensors"
BASE_CONFIG = "base-config"
FACEID_FILE = "ip-adapter-faceid_sd15.bin"
FACE_FOLDER = "buffalo_l"
FACE_MODELS = ("det_10g.onnx", "w600k_r50.onnx")
LCM_LORA_FILES = ("lcm-lora-sdv1-5.safetensors", "lcm-lora-sdv1-5/pytorch_lora_weights.safetensors")
MODEL_COMPONENTS = {
    "unet": ("diffusion_pytorch_model*.safetensors", "diffusion_pytorch_model*.bin"),
    "vae": ("diffusion_pytorch_model*.safetensors", "diffusion_pytorch_model*.bin"),
    "text_encoder": ("model*.safetensors", "pytorch_model*.bin"),
}


@dataclass(frozen=True, slots=True)
class Weights:
    root: Path
    base: Path
    """A folder in diffusers layout, or one ``.safetensors`` file."""
    base_config: Path | None
    """Beside a one-file base: the diffusers-layout folder its configs come from."""
    faceid: Path
    faces: Path
    """The insightface model folder (``buffalo_l``)."""
    lcm_lora: Path | None

    @property
    def single_file(self) -> bool:
        return self.base_config is not None


def _config_problems(folder: Path, label: str, weights: bool) -> list[str]:
    """What a diffusers-layout folder lacks: configs, the tokenizer and (with ``weights``)
    each model's weights file."""
    problems = []
    if not (folder / "model_index.json").is_file():
        problems.append(f"{label}/model_index.json")
    for component, patterns in MODEL_COMPONENTS.items():
        if not (folder / component / "config.json").is_file():
            problems.append(f"{label}/{component}/config.json")
        if weights and not any(any((folder / component).glob(p)) for p in patterns):
            problems.append(f"{label}/{component}/{patterns[0].replace('*', '')} (or .bin)")
    tokenizer = folder / "tokenizer"
    has_bpe = (tokenizer / "vocab.json").is_file() and (tokenizer / "merges.txt").is_file()
    if not has_bpe and not (tokenizer / "tokenizer.json").is_file():
        problems.append(f"{label}/tokenizer/vocab.json and merges.txt (or tokenizer.json)")
    if not (folder / "scheduler" / "scheduler_config.json").is_file():
        problems.append(f"{label}/scheduler/scheduler_config.json")
    return problems


def _base(root: Path) -> tuple[Path, Path | None, list[str]]:
    folder, single = root / BASE_FOLDER, root / BASE_FILE
    if folder.is_dir():
        return folder, None, _config_problems(folder, BASE_FOLDER, weights=True)
    if single.is_file():
        config = root / BASE_CONFIG
        if not config.is_dir():
            return (
                single,
                config,
                [f"{BASE_CONFIG}/ (the configs and tokenizer beside {BASE_FILE})"],
            )
        return single, config, _config_problems(config, BASE_CONFIG, weights=False)
    missing = (
        f"the base model: {BASE_FOLDER}/ (SD 1.5 in diffusers layout), or {BASE_FILE} "
        f"with {BASE_CONFIG}/"
    )
    return folder, None, [missing]


def discover(root: Path) -> Weights:
    """The files of the weights folder ``root``; raises ``MissingWeights`` naming every
    missing one."""
    root = root.expanduser()
    if not root.is_dir():
        raise MissingWeights(root, ["the folder itself"])
    base, base_config, missing = _base(root)
    faceid = root / FACEID_FILE
    if not faceid.is_file():
        missing.append(FACEID_FILE)
    faces = root / FACE_FOLDER
    missing.extend(f"{FACE_FOLDER}/{name}" for name in FACE_MODELS if not (faces / name).is_file())
    if missing:
        raise MissingWeights(root, missing)
    lcm = next((root / name for name in LCM_LORA_FILES if (root / name).is_file()), None)
    return Weights(root, base, base_config, faceid, faces, lcm)
