"""Speed of the diffusers backend on a GPU: images per second, peak memory, cold load.

    python -m bench.gpu                       # SD 1.5-sized random weights, cuda:0
    python -m bench.gpu --weights DIR         # real weights (docs/gpu.md layout)
    python -m bench.gpu --smoke               # tiny weights on the CPU: checks the script only

Two rows, each 8 images of 512x512 in one prompt (one batch) through
``DiffusersBackend.generate``, FaceID on, JPEG encoding included: LCM (LCM-LoRA) at
6 steps and DPM++ SDE Karras at 30 steps, each at the backend's default guidance
(1.5 and 7: both run classifier-free guidance, so the UNet sees 16 latents a step).
One warm-up prompt, then ``--repeat`` timed prompts; the median is reported. Peak
memory is ``torch.cuda.max_memory_allocated`` over the row. Cold load is the time
from the weights on disk (page cache warm) to a backend ready on the GPU.

Random weights (no download) have the real shapes, so they cost what real ones do;
the pictures are noise. Where torch sees no CUDA device the script says so and exits 0.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROWS = (("lcm", 6), ("dpm++sde_karras", 30))


def _face() -> bytes:
    from PIL import Image

    image = Image.new("RGB", (512, 512), (200, 140, 110))
    image.paste((60, 40, 30), (150, 120, 362, 400))
    out = io.BytesIO()
    image.save(out, "JPEG")
    return out.getvalue()


def _cuda_missing() -> str | None:
    try:
        import torch
    except ImportError:
        return "the gpu extra is not installed (pip install -e '.[gpu]')"
    if not torch.cuda.is_available():
        return f"torch {torch.__version__} sees no CUDA device"
    return None


def run(args: argparse.Namespace) -> dict[str, object]:
    import torch

    from mockserver.backends import FaceRef, GenerationJob
    from mockserver.backends.diffusers.backend import DiffusersBackend
    from mockserver.backends.diffusers.layout import discover
    from mockserver.backends.diffusers.randomweights import SD15, TINY, write_weights

    device = "cpu" if args.smoke else "cuda:0"
    size, images, repeat = (64, 2, 1) if args.smoke else (args.size, args.images, args.repeat)
    result: dict[str, object] = {"device": device, "torch": torch.__version__}
    if device != "cpu":
        result["gpu"] = torch.cuda.get_device_name(0)
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as scratch:
        weights = args.weights
        if weights is None:
            started = time.perf_counter()
            weights = write_weights(
                Path(scratch) / "weights",
                TINY if args.smoke else SD15,
                device=device,
                dtype=None if args.smoke else torch.float16,
            )
            result["write_random_weights_s"] = round(time.perf_counter() - started, 2)
        started = time.perf_counter()
        backend = DiffusersBackend.load(discover(weights), None, on=[device])
        if device != "cpu":
            torch.cuda.synchronize()
        result["cold_load_s"] = round(time.perf_counter() - started, 2)
        face = FaceRef(1, 1.0, _face())
        rows = []
        for scheduler, steps in ROWS:
            job = GenerationJob(
                prompt_id=1,
                tune_id=690204,
                text="<faceid:1:1> portrait photo of a man trekking in the alps",
                negative_prompt="blurry, lowres",
                width=size,
                height=size,
                seeds=tuple(range(images)),
                scheduler=scheduler,
                cfg_scale=None,
                steps=2 if args.smoke else steps,
                faces=(face,),
            )
            if device != "cpu":
                torch.cuda.reset_peak_memory_stats()
            backend.generate(job)  # warm-up (and the face embedding, once)
            times = []
            for _ in range(repeat):
                if device != "cpu":
                    torch.cuda.synchronize()
                started = time.perf_counter()
                generated = backend.generate(job)
                times.append(time.perf_counter() - started)
                assert len(generated.images) == images
            median = statistics.median(times)
            peak = torch.cuda.max_memory_allocated() / 2**30 if device != "cpu" else 0.0
            rows.append(
                {
                    "scheduler": scheduler,
                    "steps": job.steps,
                    "images": images,
                    "size": f"{size}x{size}",
                    "seconds": round(median, 3),
                    "images_per_s": round(images / median, 2),
                    "peak_gib": round(peak, 2),
                    "runs": [round(t, 3) for t in times],
                }
            )
        result["rows"] = rows
    return result


def _table(result: dict[str, object]) -> str:
    lines = [
        f"device: {result['device']} {result.get('gpu', '')} (torch {result['torch']})",
        f"cold load: {result['cold_load_s']} s",
        "| scheduler | steps | images | size | seconds (median) | images/s | peak GiB |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    rows = result["rows"]
    assert isinstance(rows, list)
    for row in rows:
        lines.append(
            f"| {row['scheduler']} | {row['steps']} | {row['images']} | {row['size']} "
            f"| {row['seconds']} | {row['images_per_s']} | {row['peak_gib']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, help="a real weights folder (default: random)")
    parser.add_argument("--images", type=int, default=8, help="images per prompt (one batch)")
    parser.add_argument("--size", type=int, default=512, help="width and height")
    parser.add_argument("--repeat", type=int, default=3, help="timed prompts per row")
    parser.add_argument("--json", type=Path, help="also write the result as JSON here")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny weights on the CPU: runs the code, measures nothing",
    )
    args = parser.parse_args(argv)
    if not args.smoke:
        missing = _cuda_missing()
        if missing is not None:
            print(f"bench/gpu.py: {missing}; nothing measured. Run it where CUDA is available.")
            return 0
    result = run(args)
    print(_table(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
