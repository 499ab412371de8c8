"""Face embeddings: insightface's ``normed_embedding`` of the largest face in a tune's
image, computed once per tune and kept on disk.

The models come from the local ``buffalo_l`` folder only (insightface downloads a
pack only when given a name, never a folder); they run on the CPU, once per tune.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from ..errors import BackendError, GenerationError

Embedding = Any
"""A float32 numpy vector (512 values for buffalo_l), L2-normed."""

DETECTION_SIZE = (640, 640)


class NoFace(GenerationError):
    """The image of a FaceID tune shows no face the detector finds."""


class FaceEncoder(Protocol):
    def embed(self, image: bytes) -> Embedding:
        """The embedding of the largest face in an encoded image; raises ``NoFace``."""
        ...


def largest(faces: Sequence[Any]) -> Any:
    """The face whose box has the largest area."""

    def area(face: Any) -> float:
        left, top, right, bottom = (float(v) for v in face.bbox[:4])
        return (right - left) * (bottom - top)

    return max(faces, key=area)


def decode_bgr(image: bytes) -> Any:
    """An encoded image as the BGR uint8 array insightface (OpenCV) expects."""
    import numpy as np
    from PIL import Image, ImageOps

    with Image.open(io.BytesIO(image)) as opened:
        rgb = ImageOps.exif_transpose(opened).convert("RGB")
    return np.ascontiguousarray(np.asarray(rgb)[:, :, ::-1])


class InsightFaceEncoder:
    """insightface's detector and recognition model from a local folder, on the CPU."""

    def __init__(self, folder: Path) -> None:
        from insightface.app import FaceAnalysis

        try:
            self._app = FaceAnalysis(
                name=str(folder),
                allowed_modules=["detection", "recognition"],
                providers=["CPUExecutionProvider"],
            )
        except Exception as exc:  # insightface asserts; onnxruntime has its own errors
            raise BackendError(f"cannot load the face models in {folder}: {exc!r}") from exc
        if "recognition" not in self._app.models:
            raise BackendError(f"{folder} holds no recognition model insightface recognises")
        self._app.prepare(ctx_id=-1, det_size=DETECTION_SIZE)

    def embed(self, image: bytes) -> Embedding:
        import numpy as np

        faces = self._app.get(decode_bgr(image))
        if not faces:
            raise NoFace("no face found in the image")
        return np.asarray(largest(faces).normed_embedding, dtype=np.float32)


class EmbeddingCache:
    """Embeddings by tune: computed once, then read from memory or ``directory``."""

    def __init__(self, encoder: FaceEncoder, directory: Path | None) -> None:
        self.encoder = encoder
        self.directory = directory
        self.computed = 0
        """How many embeddings were computed (not read back)."""
        self._memory: dict[str, Embedding] = {}
        self._lock = threading.Lock()

    def get(self, tune_id: int, image: bytes) -> Embedding:
        """The embedding of the face of tune ``tune_id`` (whose image is ``image``)."""
        key = f"{tune_id}-{hashlib.sha256(image).hexdigest()[:16]}"
        with self._lock:
            found = self._memory.get(key)
            if found is None:
                found = self._read(key)
            if found is None:
                try:
                    found = self.encoder.embed(image)
                except NoFace:
                    raise NoFace(f"no face found in the image of FaceID tune {tune_id}") from None
                self.computed += 1
                self._write(key, found)
            self._memory[key] = found
            return found

    def _path(self, key: str) -> Path | None:
        return self.directory / f"{key}.npy" if self.directory is not None else None

    def _read(self, key: str) -> Embedding | None:
        import numpy as np

        path = self._path(key)
        if path is None or not path.is_file():
            return None
        return np.load(path)

    def _write(self, key: str, embedding: Embedding) -> None:
        import numpy as np

        path = self._path(key)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.partial")
        with partial.open("wb") as out:
            np.save(out, embedding)
        partial.replace(path)
