"""The diffusers backend stays optional: what runs with or without the ``gpu`` extra.

The placeholder default imports nothing of torch; ``--backend``/``--weights`` (and
their variables) reach the settings; a missing weights file or package is a clear
startup error; the job → pipeline mapping is the same everywhere.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from mockserver.backends import (
    BackendError,
    BackendUnavailable,
    FaceRef,
    GenerationJob,
    MissingWeights,
    load_backend,
)
from mockserver.backends.diffusers.layout import discover
from mockserver.backends.diffusers.plan import make_plan
from mockserver.backends.diffusers.schedulers import DEFAULT_SCHEDULER, SCHEDULERS
from mockserver.cli import build_parser, settings_from


def test_placeholder_default_imports_no_model_library():
    script = textwrap.dedent(
        """
        import sys
        HEAVY = ("torch", "diffusers", "transformers", "peft", "insightface", "onnxruntime")
        from starlette.testclient import TestClient
        from mockserver.app import create_app
        import mockserver.cli
        from mockserver.settings import Settings

        settings = Settings(ephemeral=True, prompt_seconds=0)
        assert settings.backend == "placeholder"
        with TestClient(create_app(settings)) as client:
            auth = {"Authorization": "Bearer sd_no_torch"}
            made = client.post("/tunes/690204/prompts", headers=auth,
                               json={"prompt": {"text": "a dog", "num_images": 1}})
            assert made.status_code in (200, 201), made.text
            done = client.post(f"/_mock/prompts/{made.json()['id']}/complete").json()
            assert len(done["images"]) == 1, done
        loaded = sorted(name for name in HEAVY if name in sys.modules)
        assert not loaded, loaded
        print("ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("ok")


def test_flags_and_variables_reach_the_settings(monkeypatch, tmp_path: Path):
    args = build_parser().parse_args(
        ["serve", "--backend", "diffusers", "--weights", str(tmp_path)]
    )
    settings = settings_from(args, 8000)
    assert (settings.backend, settings.weights) == ("diffusers", tmp_path)
    assert settings_from(build_parser().parse_args(["serve"]), 8000).backend == "placeholder"
    monkeypatch.setenv("ASTRIA_MOCK_BACKEND", "diffusers")
    monkeypatch.setenv("ASTRIA_MOCK_WEIGHTS", str(tmp_path))
    settings = settings_from(build_parser().parse_args(["worker"]), 8000)
    assert (settings.backend, settings.weights) == ("diffusers", tmp_path)
    assert type(settings).from_json(settings.to_json()) == settings


def test_help_lists_the_backend_flags():
    output = subprocess.run(
        [sys.executable, "-m", "mockserver.cli", "serve", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "--backend {placeholder,diffusers}" in output
    assert "--weights" in output


def serve(*flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mockserver.cli", "serve", "--port", "0", "--ephemeral", *flags],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_missing_weights_are_a_clear_startup_error(tmp_path: Path):
    (tmp_path / "buffalo_l").mkdir()
    (tmp_path / "buffalo_l" / "det_10g.onnx").write_bytes(b"")
    result = serve("--backend", "diffusers", "--weights", str(tmp_path))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    for named in ("base/", "base.safetensors", "ip-adapter-faceid_sd15.bin", "w600k_r50.onnx"):
        assert named in result.stderr
    assert "det_10g.onnx" not in result.stderr


def test_diffusers_needs_weights_and_one_process_per_gpu_set(tmp_path: Path):
    result = serve("--backend", "diffusers")
    assert result.returncode == 2
    assert "--weights DIR" in result.stderr
    result = subprocess.run(
        [
            *(sys.executable, "-m", "mockserver.cli", "serve", "--port", "0", "--workers", "2"),
            *("--data-dir", str(tmp_path), "--backend", "diffusers", "--weights", str(tmp_path)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--no-generate" in result.stderr


def complete_layout(root: Path, single_file: bool = False) -> Path:
    """Empty files where the weights folder needs files."""
    base = root / ("base-config" if single_file else "base")
    names = ["model_index.json", "tokenizer/vocab.json", "tokenizer/merges.txt"]
    names += ["scheduler/scheduler_config.json"]
    for component, weights in (
        ("unet", "diffusion_pytorch_model.safetensors"),
        ("vae", "diffusion_pytorch_model.fp16.safetensors"),
        ("text_encoder", "model.safetensors"),
    ):
        names.append(f"{component}/config.json")
        if not single_file:
            names.append(f"{component}/{weights}")
    for name in names:
        (base / name).parent.mkdir(parents=True, exist_ok=True)
        (base / name).write_text("{}")
    if single_file:
        (root / "base.safetensors").write_bytes(b"")
    (root / "buffalo_l").mkdir()
    for name in (
        "ip-adapter-faceid_sd15.bin",
        "buffalo_l/det_10g.onnx",
        "buffalo_l/w600k_r50.onnx",
    ):
        (root / name).write_bytes(b"")
    return root


def test_layout_names_each_missing_file(tmp_path: Path):
    with pytest.raises(MissingWeights) as empty:
        discover(tmp_path)
    assert len(empty.value.missing) == 4
    root = complete_layout(tmp_path / "w")
    found = discover(root)
    assert (found.base, found.base_config, found.lcm_lora) == (root / "base", None, None)
    (root / "base" / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    (root / "base" / "tokenizer" / "merges.txt").unlink()
    with pytest.raises(MissingWeights) as broken:
        discover(root)
    assert broken.value.missing == (
        "base/unet/diffusion_pytorch_model.safetensors (or .bin)",
        "base/tokenizer/vocab.json and merges.txt (or tokenizer.json)",
    )
    with pytest.raises(MissingWeights, match="the folder itself"):
        discover(tmp_path / "nowhere")


def test_layout_one_file_base_and_optional_lcm_lora(tmp_path: Path):
    root = complete_layout(tmp_path, single_file=True)
    (root / "lcm-lora-sdv1-5").mkdir()
    (root / "lcm-lora-sdv1-5" / "pytorch_lora_weights.safetensors").write_bytes(b"")
    found = discover(root)
    assert found.single_file
    assert found.base == root / "base.safetensors"
    assert found.lcm_lora == root / "lcm-lora-sdv1-5" / "pytorch_lora_weights.safetensors"
    (root / "base-config" / "scheduler" / "scheduler_config.json").unlink()
    with pytest.raises(MissingWeights, match=r"base-config/scheduler/scheduler_config\.json"):
        discover(root)


def test_a_missing_package_is_named(monkeypatch, tmp_path: Path):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "peft" else real(name, *a)
    )
    with pytest.raises(BackendUnavailable, match=r"needs .*peft.*astria-mock\[gpu\]"):
        load_backend("diffusers", complete_layout(tmp_path), None)
    with pytest.raises(BackendError, match="unknown backend"):
        load_backend("dalle", None, None)


JOB = GenerationJob(
    prompt_id=1,
    tune_id=690204,
    text="<faceid:7:0.8> a man <lora:9:1> in the alps",
    negative_prompt="",
    width=512,
    height=640,
    seeds=(5, 6),
    scheduler=None,
    cfg_scale=None,
    steps=None,
    faces=(FaceRef(7, 0.8, b"face"),),
)


def job(**changes: Any) -> GenerationJob:
    return replace(JOB, **changes)


def test_plan_defaults_and_tags():
    plan = make_plan(job(), has_lcm_lora=True)
    assert plan.prompt == "a man in the alps"
    assert plan.negative_prompt is None
    assert (plan.scheduler, plan.steps, plan.cfg_scale) == (DEFAULT_SCHEDULER, 30, 7.0)
    assert (plan.width, plan.height, plan.seeds) == (512, 640, (5, 6))
    assert plan.face == FaceRef(7, 0.8, b"face")
    assert not plan.lcm_lora
    assert plan.notes == ()
    lcm = make_plan(job(scheduler="lcm", cfg_scale=3, steps=8), has_lcm_lora=True)
    assert (lcm.scheduler, lcm.steps, lcm.cfg_scale, lcm.lcm_lora) == ("lcm", 8, 3.0, True)
    assert make_plan(job(scheduler="tcd"), has_lcm_lora=True).steps == 6
    assert set(SCHEDULERS) == {
        "euler", "euler_a", "dpm++2m", "dpm++2m_karras", "dpm++sde", "dpm++sde_karras", "lcm", "tcd",
    }  # fmt: skip


def test_plan_notes_what_it_cannot_honour():
    faces = (FaceRef(7, 1.0, None), FaceRef(8, 1.0, b"a"), FaceRef(9, 0.5, b"b"))
    options = (("face_swap", True), ("input_image", {"key": "x"}), ("lora", "<lora:9:1>"))
    plan = make_plan(job(scheduler="lcm", faces=faces, options=options), has_lcm_lora=False)
    assert plan.scheduler == DEFAULT_SCHEDULER
    assert not plan.lcm_lora
    assert plan.face == faces[1]
    assert plan.notes == (
        "face_swap=true is not honoured by the diffusers backend (ignored)",
        "input_image=(given) is not honoured by the diffusers backend (ignored)",
        "lora=<lora:9:1> is not honoured by the diffusers backend (ignored)",
        "scheduler lcm needs the LCM-LoRA, which the weights folder lacks; "
        "dpm++2m_karras used instead",
        "FaceID tune 7 has no face image; its tag is ignored",
        "<faceid:9:0.5> ignored: one face per prompt, the first is used",
    )


def test_gpu_bench_without_cuda_says_so(capsys):
    from bench import gpu

    if gpu._cuda_missing() is None:
        pytest.skip("CUDA is available here: bench/gpu.py would measure")
    assert gpu.main([]) == 0
    assert "nothing measured" in capsys.readouterr().out
