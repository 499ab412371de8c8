"""A weights folder in the real layout with random weights: no download, any machine.

The images it gives are noise, but every file goes through the real loading code:
the SD 1.5 pipeline in diffusers layout (a CLIP tokenizer whose vocab.json and
merges.txt are written here), ``ip-adapter-faceid_sd15.bin`` with the key layout of
the real file (``image_proj`` + ``ip_adapter`` with its LoRA, sized for the UNet),
an LCM-LoRA, and two ONNX models that insightface's ``FaceAnalysis`` recognises
as a detector and a recognition model. ``TINY`` loads and runs in a second on a
CPU (the tests); ``SD15`` has the real sizes (bench/gpu.py).

The fake detector finds two faces, a small one near the top-left corner and a
larger one in the middle, in any image that is not flat mid-grey (which shows no
face); the fake recognition model embeds the pixels of the aligned crop.

    python -m mockserver.backends.diffusers.randomweights DIR [--size tiny|sd15]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .layout import BASE_FOLDER, FACE_FOLDER, FACE_MODELS, FACEID_FILE, LCM_LORA_FILES

EMBEDDING_SIZE = 512
DETECTOR_INPUT = 128


@dataclass(frozen=True, slots=True)
class Size:
    unet_channels: tuple[int, ...]
    layers_per_block: int
    cross_attention_dim: int
    norm_groups: int
    vae_channels: tuple[int, ...]
    text_hidden: int
    text_layers: int
    text_heads: int
    text_intermediate: int
    text_vocab: int
    faceid_rank: int
    lcm_rank: int
    sample_size: int


TINY = Size((32, 64), 1, 32, 8, (32, 64), 32, 2, 4, 37, 0, 4, 4, 16)
SD15 = Size(
    (320, 640, 1280, 1280), 2, 768, 32, (128, 256, 512, 512), 768, 12, 12, 3072, 49408, 128, 64, 64
)
SIZES = {"tiny": TINY, "sd15": SD15}

# insightface's five landmarks, relative to a face box's centre and half-width
LANDMARKS = ((-0.35, -0.2), (0.35, -0.2), (0.0, 0.1), (-0.3, 0.45), (0.3, 0.45))
FAKE_FACES = {8: ((16, 16), (8, 8, 8, 8), 0.95), 32: ((64, 64), (40, 48, 40, 40), 0.9)}
"""Detector stride: (centre, (left, top, right, bottom), score), in detector pixels."""


def _bytes_to_unicode() -> list[str]:
    """GPT-2's byte-to-character table, which CLIP's BPE vocabulary is written in."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    codes = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return [chr(code) for code in codes]


def write_tokenizer_files(folder: Path) -> dict[str, int]:
    """vocab.json and merges.txt of a byte-level CLIP BPE with no merges."""
    chars = _bytes_to_unicode()
    tokens = [*chars, *(c + "</w>" for c in chars), "<|startoftext|>", "<|endoftext|>"]
    vocab = {token: index for index, token in enumerate(tokens)}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    return vocab


def _unet(size: Size) -> Any:
    from diffusers import UNet2DConditionModel

    blocks = len(size.unet_channels)
    down = ("CrossAttnDownBlock2D",) * (blocks - 1) + ("DownBlock2D",)
    up = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (blocks - 1)
    return UNet2DConditionModel(
        sample_size=size.sample_size,
        block_out_channels=size.unet_channels,
        layers_per_block=size.layers_per_block,
        down_block_types=down,
        up_block_types=up,
        cross_attention_dim=size.cross_attention_dim,
        attention_head_dim=8,
        norm_num_groups=size.norm_groups,
    )


def _vae(size: Size) -> Any:
    from diffusers import AutoencoderKL

    blocks = len(size.vae_channels)
    return AutoencoderKL(
        block_out_channels=size.vae_channels,
        down_block_types=("DownEncoderBlock2D",) * blocks,
        up_block_types=("UpDecoderBlock2D",) * blocks,
        latent_channels=4,
        norm_num_groups=size.norm_groups,
        layers_per_block=size.layers_per_block,
        sample_size=size.sample_size * 2 ** (blocks - 1),
    )


def _text_encoder(size: Size, vocab: dict[str, int]) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=max(size.text_vocab, len(vocab)),
        hidden_size=size.text_hidden,
        intermediate_size=size.text_intermediate,
        num_hidden_layers=size.text_layers,
        num_attention_heads=size.text_heads,
        max_position_embeddings=77,
        bos_token_id=vocab["<|startoftext|>"],
        eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["<|endoftext|>"],
    )
    return CLIPTextModel(config)


def write_base(folder: Path, size: Size, dtype: Any = None) -> Any:
    """The SD 1.5 pipeline in diffusers layout; returns its UNet."""
    from diffusers import PNDMScheduler, StableDiffusionPipeline
    from transformers import CLIPTokenizer

    vocab = write_tokenizer_files(folder / "tokenizer")
    tokenizer = CLIPTokenizer(
        str(folder / "tokenizer" / "vocab.json"),
        str(folder / "tokenizer" / "merges.txt"),
        model_max_length=77,
    )
    scheduler = PNDMScheduler(  # Realistic Vision v5.1's scheduler config
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        skip_prk_steps=True,
        set_alpha_to_one=False,
    )
    pipe = StableDiffusionPipeline(
        vae=_vae(size),
        text_encoder=_text_encoder(size, vocab),
        tokenizer=tokenizer,
        unet=_unet(size),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )
    if dtype is not None:
        pipe.to(dtype=dtype)
    pipe.save_pretrained(folder)
    return pipe.unet


def _hidden_size(unet: Any, name: str) -> int:
    channels = unet.config.block_out_channels
    if name.startswith("mid_block"):
        return int(channels[-1])
    if name.startswith("up_blocks"):
        return int(list(reversed(channels))[int(name[len("up_blocks.")])])
    return int(channels[int(name[len("down_blocks.")])])


def faceid_state_dict(unet: Any, rank: int, scale: float = 0.1) -> dict[str, Any]:
    """Random weights in the layout of ``ip-adapter-faceid_sd15.bin`` for ``unet``: the
    image projection (512 → 2·512 → 4 tokens, LayerNorm) and, per attention processor
    in diffusers' order, a LoRA on to_q/to_k/to_v/to_out and, on cross-attention,
    to_k_ip/to_v_ip."""
    import torch

    cross = int(unet.config.cross_attention_dim)
    hidden = 2 * EMBEDDING_SIZE
    image_proj = {
        "proj.0.weight": torch.randn(hidden, EMBEDDING_SIZE) * scale,
        "proj.0.bias": torch.zeros(hidden),
        "proj.2.weight": torch.randn(cross * 4, hidden) * scale,
        "proj.2.bias": torch.zeros(cross * 4),
        "norm.weight": torch.ones(cross),
        "norm.bias": torch.zeros(cross),
    }
    ip_adapter: dict[str, Any] = {}
    for index, name in enumerate(unet.attn_processors.keys()):
        width = _hidden_size(unet, name)
        self_attention = name.endswith("attn1.processor")
        key_width = width if self_attention else cross
        for part, inputs in (("q", width), ("k", key_width), ("v", key_width), ("out", width)):
            ip_adapter[f"{index}.to_{part}_lora.down.weight"] = torch.randn(rank, inputs) * scale
            ip_adapter[f"{index}.to_{part}_lora.up.weight"] = torch.randn(width, rank) * scale
        if not self_attention:
            ip_adapter[f"{index}.to_k_ip.weight"] = torch.randn(width, cross) * 5 * scale
            ip_adapter[f"{index}.to_v_ip.weight"] = torch.randn(width, cross) * 5 * scale
    return {"image_proj": image_proj, "ip_adapter": ip_adapter}


def write_lcm_lora(path: Path, unet: Any, rank: int) -> None:
    """A random LoRA over the UNet's attention, feed-forward and resnet layers (where
    LCM-LoRA has its weights), in peft's key layout."""
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig, get_peft_model_state_dict

    targets = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj"]
    targets += ["ff.net.2", "conv1", "conv2", "time_emb_proj"]
    config = LoraConfig(r=rank, lora_alpha=rank, target_modules=targets, init_lora_weights=False)
    unet.add_adapter(config, adapter_name="lcm")
    layers = get_peft_model_state_dict(unet, adapter_name="lcm")
    unet.delete_adapters("lcm")
    StableDiffusionPipeline.save_lora_weights(
        path.parent, unet_lora_layers=layers, weight_name=path.name, safe_serialization=True
    )


def _onnx_constant(name: str, value: Any) -> Any:
    from onnx import helper, numpy_helper

    return helper.make_node(
        "Constant", [], [name], value=numpy_helper.from_array(value.astype("float32"), name)
    )


def _detector() -> Any:
    """An SCRFD-shaped detector (9 outputs: scores, boxes, landmarks at strides 8/16/32)
    on a fixed 128x128 input; its scores scale with the mean absolute pixel value."""
    import numpy as np
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Abs", ["input.1"], ["absolute"]),
        helper.make_node("ReduceMean", ["absolute"], ["mean"], keepdims=0),
        _onnx_constant("gain", np.array(3.0)),
        helper.make_node("Mul", ["mean", "gain"], ["scaled"]),
        _onnx_constant("low", np.array(0.0)),
        _onnx_constant("high", np.array(1.0)),
        helper.make_node("Clip", ["scaled", "low", "high"], ["presence"]),
    ]
    widths = {"score": 1, "bbox": 4, "kps": 10}
    outputs = []
    for kind in widths:
        for stride in (8, 16, 32):
            count = (DETECTOR_INPUT // stride) ** 2 * 2
            outputs.append(
                helper.make_tensor_value_info(
                    f"{kind}_{stride}", TensorProto.FLOAT, [count, widths[kind]]
                )
            )
    for stride in (8, 16, 32):
        grid = DETECTOR_INPUT // stride
        scores, boxes = np.zeros((grid * grid * 2, 1)), np.ones((grid * grid * 2, 4))
        landmarks = np.zeros((grid * grid * 2, 10))
        if stride in FAKE_FACES:
            (x, y), box, score = FAKE_FACES[stride]
            anchor = ((y // stride) * grid + x // stride) * 2
            scores[anchor, 0] = score
            boxes[anchor] = np.array(box) / stride
            half = (box[0] + box[2]) / 2
            landmarks[anchor] = (np.array(LANDMARKS) * half).reshape(-1) / stride
        nodes += [
            _onnx_constant(f"raw_{stride}", scores),
            helper.make_node("Mul", [f"raw_{stride}", "presence"], [f"score_{stride}"]),
            _onnx_constant(f"bbox_{stride}", boxes),
            _onnx_constant(f"kps_{stride}", landmarks),
        ]
    shape = [1, 3, DETECTOR_INPUT, DETECTOR_INPUT]
    image = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, shape)
    return helper.make_graph(nodes, "fake_scrfd", [image], outputs)


def _recognizer(seed: int) -> Any:
    """An ArcFace-shaped model: 112x112 crop → 8x8 average pool → linear → 512 values."""
    import numpy as np
    from onnx import TensorProto, helper

    weight = np.random.default_rng(seed).standard_normal((3 * 14 * 14, EMBEDDING_SIZE))
    nodes = [
        helper.make_node(
            "AveragePool", ["input.1"], ["pooled"], kernel_shape=[8, 8], strides=[8, 8]
        ),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        _onnx_constant("weight", weight),
        helper.make_node("MatMul", ["flat", "weight"], ["embedding"]),
    ]
    crop = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["batch", 3, 112, 112])
    out = helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", EMBEDDING_SIZE])
    return helper.make_graph(nodes, "fake_arcface", [crop], [out])


def write_face_models(folder: Path, seed: int = 0) -> None:
    import onnx
    from onnx import helper

    folder.mkdir(parents=True, exist_ok=True)
    for name, graph in zip(FACE_MODELS, (_detector(), _recognizer(seed)), strict=True):
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        onnx.checker.check_model(model)
        onnx.save(model, str(folder / name))


def write_weights(
    root: Path,
    size: Size = TINY,
    *,
    seed: int = 0,
    lcm_lora: bool = True,
    device: str = "cpu",
    dtype: Any = None,
) -> Path:
    """A complete weights folder under ``root``; returns ``root``. The models are built
    on ``device`` (a GPU initialises SD 1.5-sized ones much faster) and saved in
    ``dtype`` (default: float32)."""
    import torch

    torch.manual_seed(seed)
    root.mkdir(parents=True, exist_ok=True)
    with torch.device(device):
        unet = write_base(root / BASE_FOLDER, size, dtype)
    torch.save(faceid_state_dict(unet, size.faceid_rank), root / FACEID_FILE)
    if lcm_lora:
        write_lcm_lora(root / LCM_LORA_FILES[0], unet, size.lcm_rank)
    write_face_models(root / FACE_FOLDER, seed)
    return root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    write_weights(args.folder, SIZES[args.size], seed=args.seed)
    print(f"random {args.size} weights written to {args.folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
