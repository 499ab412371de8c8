"""Errors of the generation backends.

    BackendError (ValueError)   the backend cannot start; ``astria-mock serve`` prints the
    │                           message and exits 2, with no traceback
    ├── BackendUnavailable      a package it needs is not installed (the ``gpu`` extra, peft)
    └── MissingWeights          files are missing from ``--weights DIR``; names each one
    GenerationError (RuntimeError)
                                one prompt cannot be generated (no face in a FaceID tune's
                                image, say); the prompt gets ``user_error`` and its callback

Nothing here imports torch: these are raised before any model library is loaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class BackendError(ValueError):
    """The backend cannot start."""


class BackendUnavailable(BackendError):
    """A package the backend needs is not installed."""


class MissingWeights(BackendError):
    """Files the backend needs are missing from the weights folder."""

    def __init__(self, root: Path, missing: Sequence[str]) -> None:
        self.root = root
        self.missing = tuple(missing)
        lines = "\n".join(f"  - {item}" for item in self.missing)
        super().__init__(
            f"the weights folder {root} is missing:\n{lines}\n"
            "(weights never download; see docs/gpu.md for the folder layout)"
        )


class GenerationError(RuntimeError):
    """One prompt cannot be generated; its message becomes the prompt's ``user_error``."""
