"""The diffusers backend on the CPU, with tiny random models in the real weights layout.

A session fixture writes the weights folder (``randomweights.TINY``: tiny UNet, VAE
and CLIP text model, a tokenizer written on the fly, a random FaceID file in the real
key layout, an LCM-LoRA, fake insightface ONNX models); everything loads through the
backend's real loading code. Skipped, with the reason, where the ``gpu`` extra is not
installed.
"""

from __future__ import annotations

import io
import logging
import shutil
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch", reason="the gpu extra is not installed: pip install -e '.[gpu]'")
pytest.importorskip("diffusers", reason="the gpu extra is not installed: pip install -e '.[gpu]'")
pytest.importorskip("peft", reason="the gpu extra is not installed: pip install -e '.[gpu]'")
pytest.importorskip("insightface", reason="the gpu extra is not installed: pip install -e '.[gpu]'")

import numpy as np
import torch
from conftest import BASE, DEFAULTS, Api, Receiver, jpeg
from PIL import Image
from starlette.testclient import TestClient

from mockserver.app import create_app
from mockserver.backends import (
    BackendError,
    BackendUnavailable,
    FaceRef,
    GenerationJob,
    load_backend,
)
from mockserver.backends.diffusers import DeferredBackend
from mockserver.backends.diffusers.backend import DiffusersBackend
from mockserver.backends.diffusers.faces import EmbeddingCache, InsightFaceEncoder, NoFace
from mockserver.backends.diffusers.layout import FACEID_FILE, discover
from mockserver.backends.diffusers.pipeline import FACEID_ADAPTER, LCM_ADAPTER, FaceIdPipeline
from mockserver.backends.diffusers.plan import make_plan
from mockserver.backends.diffusers.randomweights import write_weights
from mockserver.backends.diffusers.schedulers import SCHEDULERS

torch.set_num_threads(1)  # the same arithmetic on every run, and no fight for the 2 cores
pytestmark = [
    pytest.mark.filterwarnings("ignore:`estimate` is deprecated:FutureWarning"),  # insightface
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),  # diffusers
    pytest.mark.filterwarnings("ignore:Already found a `peft_config`:UserWarning"),  # LCM-LoRA
]

FACE = jpeg((200, 120, 90), (64, 64))
GREY = jpeg((128, 128, 128), (64, 64))


@pytest.fixture(scope="session")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_weights(tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="module")
def backend(weights: Path, tmp_path_factory: pytest.TempPathFactory) -> DiffusersBackend:
    cache = tmp_path_factory.mktemp("embeddings")
    return DiffusersBackend.load(discover(weights), cache, on=["cpu"])


@pytest.fixture
def pipeline(backend: DiffusersBackend) -> FaceIdPipeline:
    return backend.pipelines[0]


def job(**changes: Any) -> GenerationJob:
    base = GenerationJob(
        prompt_id=1,
        tune_id=690204,
        text="<faceid:7:1> a photo of a man",
        negative_prompt="blurry",
        width=32,
        height=32,
        seeds=(11, 12),
        scheduler="euler_a",
        cfg_scale=3.0,
        steps=2,
        faces=(FaceRef(7, 1.0, FACE),),
    )
    return replace(base, **changes)


def pixels(image: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(image)).convert("RGB"), dtype=np.int16)


def test_every_scheduler_name_maps_and_runs(backend: DiffusersBackend, pipeline: FaceIdPipeline):
    for name, spec in SCHEDULERS.items():
        result = backend.generate(job(scheduler=name, seeds=(1,)))
        scheduler = pipeline.pipe.scheduler
        assert type(scheduler).__name__ == spec.cls, name
        for option, value in spec.options.items():
            assert scheduler.config[option] == value, (name, option)
        assert pipeline.active == (
            (FACEID_ADAPTER, LCM_ADAPTER) if spec.few_step else (FACEID_ADAPTER,)
        )
        assert len(result.images) == 1
        assert result.notes == ()


def test_faceid_adapter_is_loaded_and_active_also_with_lcm(weights: Path, pipeline):
    unet = pipeline.pipe.unet
    processors = unet.attn_processors
    cross = [p for name, p in processors.items() if name.endswith("attn2.processor")]
    assert cross
    assert all(type(p).__name__.startswith("IPAdapterAttnProcessor") for p in cross)
    # The LoRA inside the FaceID file reached the UNet (diffusers drops it without peft).
    first = next(iter(processors)).removesuffix(".processor")
    to_q = unet.get_submodule(f"{first}.to_q")
    saved = torch.load(weights / FACEID_FILE, weights_only=True)["ip_adapter"]
    assert torch.equal(to_q.lora_A[FACEID_ADAPTER].weight, saved["0.to_q_lora.down.weight"])

    pipeline.configure(make_plan(job(faces=(FaceRef(7, 0.6, FACE),)), has_lcm_lora=True))
    assert pipeline.pipe.get_active_adapters() == [FACEID_ADAPTER]
    assert all(p.scale == [0.6] for p in cross)
    pipeline.configure(make_plan(job(scheduler="lcm"), has_lcm_lora=True))
    assert sorted(pipeline.pipe.get_active_adapters()) == sorted([FACEID_ADAPTER, LCM_ADAPTER])
    assert all(p.scale == [1.0] for p in cross)
    pipeline.configure(make_plan(job(faces=()), has_lcm_lora=True))
    assert pipeline.active == ()
    assert all(p.scale == [0.0] for p in cross)


@pytest.mark.parametrize("scheduler", ["euler_a", "dpm++sde_karras", "lcm"])
def test_each_image_depends_only_on_its_seed(backend: DiffusersBackend, pipeline, scheduler):
    first = backend.generate(job(scheduler=scheduler))
    again = backend.generate(job(scheduler=scheduler))
    assert first.images == again.images
    assert first.images[0] != first.images[1]
    # Seed 12 alone, or second in a batch: the same picture (batched float noise aside).
    plan = make_plan(job(scheduler=scheduler), has_lcm_lora=True)
    embedding = backend.faces.get(7, FACE)
    both = pipeline.run(plan, embedding)
    alone = pipeline.run(replace(plan, seeds=(12,)), embedding)
    difference = np.abs(np.asarray(both[1], np.int16) - np.asarray(alone[0], np.int16))
    assert difference.max() <= 2


def test_faceid_strength_changes_the_output(backend: DiffusersBackend):
    images = [
        pixels(backend.generate(job(faces=(FaceRef(7, s, FACE),), seeds=(3,))).images[0])
        for s in (0.0, 0.5, 1.0)
    ]
    assert np.abs(images[0] - images[1]).mean() > 1
    assert np.abs(images[1] - images[2]).mean() > 1
    other_face = backend.generate(job(faces=(FaceRef(8, 1.0, jpeg((20, 60, 220))),), seeds=(3,)))
    assert np.abs(pixels(other_face.images[0]) - images[2]).mean() > 1


def test_image_sizes_and_counts(backend: DiffusersBackend):
    result = backend.generate(job(width=48, height=32, seeds=(1, 2, 3), scheduler="lcm"))
    assert len(result.images) == 3
    for image in result.images:
        opened = Image.open(io.BytesIO(image))
        assert (opened.format, opened.size) == ("JPEG", (48, 32))


class Counting:
    def __init__(self, encoder: InsightFaceEncoder) -> None:
        self.encoder = encoder
        self.calls = 0

    def embed(self, image: bytes) -> Any:
        self.calls += 1
        return self.encoder.embed(image)


def test_embeddings_are_computed_once_per_tune(weights: Path, tmp_path: Path):
    encoder = Counting(InsightFaceEncoder(weights / "buffalo_l"))
    cache = EmbeddingCache(encoder, tmp_path)
    first = cache.get(7, FACE)
    assert np.array_equal(cache.get(7, FACE), first)
    assert (encoder.calls, cache.computed) == (1, 1)
    assert list(tmp_path.glob("7-*.npy"))
    restarted = EmbeddingCache(encoder, tmp_path)  # a new process finds it on disk
    assert np.array_equal(restarted.get(7, FACE), first)
    assert encoder.calls == 1
    cache.get(8, jpeg((20, 60, 220)))
    assert encoder.calls == 2
    with pytest.raises(NoFace, match="FaceID tune 9"):
        cache.get(9, GREY)


def test_insightface_takes_the_largest_face(weights: Path):
    encoder = InsightFaceEncoder(weights / "buffalo_l")
    # The fake detector finds a small face top-left and a large one in the middle.
    image = Image.new("RGB", (128, 128), (30, 200, 60))
    image.paste((230, 40, 40), (0, 0, 40, 40))
    out = io.BytesIO()
    image.save(out, "PNG")
    faces = encoder._app.get(np.asarray(image)[:, :, ::-1].copy())
    assert len(faces) == 2
    small, large = sorted(faces, key=lambda f: f.bbox[2] - f.bbox[0])
    embedding = encoder.embed(out.getvalue())
    assert embedding.shape == (512,)
    assert abs(float(np.linalg.norm(embedding)) - 1) < 1e-5
    assert np.allclose(embedding, large.normed_embedding, atol=1e-5)
    assert not np.allclose(embedding, small.normed_embedding, atol=1e-3)


def test_peft_is_required(weights: Path, monkeypatch):
    import diffusers.utils

    monkeypatch.setattr(diffusers.utils, "USE_PEFT_BACKEND", False)
    with pytest.raises(BackendUnavailable, match="needs peft"):
        FaceIdPipeline.load(discover(weights), "cpu", torch.float32)


def test_a_broken_faceid_file_is_a_startup_error(weights: Path, tmp_path: Path):
    broken = Path(shutil.copytree(weights, tmp_path / "weights"))
    torch.save({"unexpected": torch.zeros(1)}, broken / FACEID_FILE)
    with pytest.raises(BackendError, match="cannot load the weights"):
        create_app(replace(DEFAULTS, backend="diffusers", weights=broken))


def test_a_process_that_does_not_generate_loads_models_on_first_use(weights: Path):
    backend = load_backend("diffusers", weights, None, eager=False)
    assert isinstance(backend, DeferredBackend)
    assert backend._backend is None
    assert len(backend.generate(job(seeds=(1,))).images) == 1
    assert isinstance(backend._backend, DiffusersBackend)


# Through the HTTP API, as a client sees it.


@pytest.fixture(scope="module")
def gpu_api(weights: Path) -> Iterator[Api]:
    app = create_app(replace(DEFAULTS, backend="diffusers", weights=weights))
    with TestClient(app, base_url=BASE) as client:
        yield Api(client)


def test_faceid_prompt_end_to_end(gpu_api: Api, caplog):
    app = gpu_api.client.app
    assert app.state.lifecycle.backend.concurrency == 1
    assert app.state.lifecycle._limit._value == 1
    tune = gpu_api.faceid_tune("diffusers e2e", FACE)
    prompt = {
        "text": f"<faceid:{tune['id']}:1> a photo of a man trekking in the alps",
        "num_images": 2,
        "w": 96,
        "h": 64,
        "steps": 2,
        "scheduler": "lcm",
        "cfg_scale": 3,
        "face_swap": True,
    }
    created = gpu_api.post("/tunes/690204/prompts", json={"prompt": prompt})
    assert created.status_code == 201, created.text
    with caplog.at_level(logging.INFO, logger="astria_mock"):
        done = gpu_api.complete(created.json()["id"])
    assert done["user_error"] is None
    assert len(done["images"]) == 2
    for url in done["images"]:
        download = gpu_api.client.get(url.removeprefix(BASE))
        assert download.status_code == 200
        assert download.headers["content-type"] == "image/jpeg"
        opened = Image.open(io.BytesIO(download.content))
        assert (opened.format, opened.size) == ("JPEG", (96, 64))
    assert f"prompt {done['id']}: face_swap=true is not honoured" in caplog.text


def test_failed_generation_gets_user_error_and_callback(
    gpu_api: Api, receiver: Receiver, monkeypatch
):
    # No face in the tune's image: the backend raises, the prompt fails.
    tune = gpu_api.faceid_tune("diffusers grey", GREY)
    body = {"text": f"<faceid:{tune['id']}:1> a man", "steps": 2, "w": 64, "h": 64}
    body["callback"] = f"{receiver.url}/hooks/astria?user_id=7"
    prompt = gpu_api.post("/tunes/690204/prompts", json={"prompt": body}).json()
    done = gpu_api.complete(prompt["id"])
    assert done["images"] == []
    assert done["user_error"] == (
        f"generation failed: no face found in the image of FaceID tune {tune['id']}"
    )
    [hit] = receiver.wait_for(1)
    assert hit["json"]["prompt"]["user_error"] == done["user_error"]
    # Any other failure of the pipeline, too.
    backend = gpu_api.client.app.state.lifecycle.backend

    def out_of_memory(*_args: object) -> None:
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(backend.pipelines[0], "run", out_of_memory)
    face = gpu_api.faceid_tune("diffusers oom", FACE)
    body = {"text": f"<faceid:{face['id']}:1> a man", "steps": 2, "w": 64, "h": 64}
    prompt = gpu_api.post("/tunes/690204/prompts", json={"prompt": body}).json()
    done = gpu_api.complete(prompt["id"])
    assert done["user_error"] == "generation failed: CUDA out of memory"
    assert done["images"] == []


def test_the_api_answers_while_a_batch_renders(gpu_api: Api, monkeypatch):
    pipeline = gpu_api.client.app.state.lifecycle.backend.pipelines[0]
    started, release = threading.Event(), threading.Event()
    real_run = pipeline.run

    def slow_run(*args: Any) -> Any:
        started.set()
        release.wait(10)
        return real_run(*args)

    monkeypatch.setattr(pipeline, "run", slow_run)
    tune = gpu_api.faceid_tune("diffusers busy", FACE)
    body = {"text": f"<faceid:{tune['id']}:1> a man", "steps": 2, "w": 64, "h": 64}
    prompt = gpu_api.post("/tunes/690204/prompts", json={"prompt": body}).json()
    finished: list[dict[str, Any]] = []
    worker = threading.Thread(target=lambda: finished.append(gpu_api.complete(prompt["id"])))
    worker.start()
    try:
        assert started.wait(10)
        assert gpu_api.get(f"/tunes/690204/prompts/{prompt['id']}").json()["images"] == []
        assert gpu_api.post("/tunes/690204/prompts", json={"prompt": body}).status_code == 201
    finally:
        release.set()
        worker.join(20)
    assert len(finished[0]["images"]) == 1
