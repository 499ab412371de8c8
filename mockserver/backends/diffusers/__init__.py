"""The diffusers backend: real FaceID images (SD 1.5 + IP-Adapter FaceID), GPU first.

Needs the ``gpu`` extra and a local weights folder (``layout``). Importing this
package loads no model library: the folder and the packages are checked first, so
a missing file or package is a clear ``BackendError`` at startup; torch, diffusers
and insightface load only with the pipelines (``backend``).

Modules: ``layout`` (the weights folder), ``schedulers`` (API names → diffusers),
``plan`` (a job → pipeline arguments and notes), ``faces`` (insightface embeddings,
cached per tune), ``pipeline`` (one FaceID pipeline on one device), ``backend`` (the
pool of pipelines), ``randomweights`` (random weights in the real layout, for tests
and benchmarks).
"""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Callable
from pathlib import Path

from .. import Backend, Generated, GenerationJob
from ..errors import BackendUnavailable
from .layout import Weights, discover

__all__ = ["REQUIRED_PACKAGES", "DeferredBackend", "check_packages", "prepare_diffusers_backend"]

REQUIRED_PACKAGES = ("torch", "diffusers", "transformers", "peft", "insightface", "onnxruntime")

# Weights never download: the hub libraries read these when they are first imported.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"


def check_packages() -> None:
    """Raise ``BackendUnavailable`` naming every package of the ``gpu`` extra that is missing."""
    missing = [name for name in REQUIRED_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise BackendUnavailable(
            f"--backend diffusers needs {', '.join(missing)}: pip install 'astria-mock[gpu]'"
        )


class DeferredBackend:
    """A backend whose models load on its first job (for processes that render only
    when an admin call asks them to)."""

    concurrency = 1

    def __init__(self, load: Callable[[], Backend]) -> None:
        self._load = load
        self._backend: Backend | None = None
        self._lock = threading.Lock()

    def generate(self, job: GenerationJob) -> Generated:
        with self._lock:
            if self._backend is None:
                self._backend = self._load()
        return self._backend.generate(job)


def _load(weights: Weights, cache_dir: Path | None) -> Backend:
    from .backend import DiffusersBackend

    return DiffusersBackend.load(weights, cache_dir)


def prepare_diffusers_backend(weights: Path, cache_dir: Path | None, *, eager: bool) -> Backend:
    """Check the weights folder and the packages, then load (or, not ``eager``, defer)."""
    found = discover(weights)
    check_packages()
    if not eager:
        return DeferredBackend(lambda: _load(found, cache_dir))
    return _load(found, cache_dir)
