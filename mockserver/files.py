"""Where image files live: a directory on disk, or memory for ``--ephemeral``.

Keys are relative paths such as ``prompts/7/0.jpg``. The interface is small on
purpose so that a shared volume or an S3-compatible store can stand behind it.
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path
from typing import Protocol


class FileStore(Protocol):
    def put(self, key: str, data: bytes) -> None: ...
    def get(self, key: str) -> bytes | None: ...
    def delete_prefix(self, prefix: str) -> None: ...


def _check_key(key: str) -> str:
    parts = key.split("/")
    if not key or any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"bad file key {key!r}")
    return key


class DirectoryFileStore:
    """Files under one directory; each write lands atomically (temp file, rename).

    Not fsynced, as SQLite's commits are not (``synchronous=NORMAL``): a write survives
    the process being killed; only a power cut can cost the last ones."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def put(self, key: str, data: bytes) -> None:
        target = self.root / _check_key(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(temp, target)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise

    def get(self, key: str) -> bytes | None:
        try:
            return (self.root / _check_key(key)).read_bytes()
        except (FileNotFoundError, IsADirectoryError, ValueError):
            return None

    def delete_prefix(self, prefix: str) -> None:
        folder = self.root / _check_key(prefix.rstrip("/"))
        if folder.is_dir():
            for path in sorted(folder.rglob("*"), reverse=True):
                path.rmdir() if path.is_dir() else path.unlink()
            folder.rmdir()


class MemoryFileStore:
    def __init__(self) -> None:
        self._files: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def put(self, key: str, data: bytes) -> None:
        with self._lock:
            self._files[_check_key(key)] = data

    def get(self, key: str) -> bytes | None:
        with self._lock:
            return self._files.get(key)

    def delete_prefix(self, prefix: str) -> None:
        start = prefix.rstrip("/") + "/"
        with self._lock:
            for key in [k for k in self._files if k.startswith(start)]:
                del self._files[key]
