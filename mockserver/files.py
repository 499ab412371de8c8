"""Where image files live: a directory on disk, or memory for ``--ephemeral``.

Keys are relative paths such as ``prompts/7/0.jpg``. The interface is small on
purpose so that a shared volume or an S3-compatible store can stand behind it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
import threading
import time
import uuid
import zlib
from pathlib import Path
from typing import Protocol

BLOBS = ".blobs"
"""The directory of uploads stored by content (``DirectoryFileStore.put_upload``)."""
STAGING = ".staging"
"""The directory of uploads stored before their keys are known."""
STALE_STAGING_SECONDS = 3600


class FileStore(Protocol):
    def put(self, key: str, data: bytes) -> None: ...

    def put_upload(self, key: str, data: bytes) -> None:
        """Store an uploaded file: ``put``, for content that is likely to come again."""

    def stage_uploads(self, files: list[tuple[str, bytes]]) -> str:
        """Store uploads by name, under no key yet; returns what ``adopt`` or ``discard``
        takes. A tune's photos are stored before the transaction that numbers it."""

    def adopt(self, staged: str, prefix: str) -> None:
        """The staged files become ``prefix/<name>``, all at once; what was under
        ``prefix`` (left by a transaction that never committed) goes."""

    def discard(self, staged: str) -> None: ...
    def get(self, key: str) -> bytes | None: ...
    def delete_prefix(self, prefix: str) -> None: ...


def _check_key(key: str) -> str:
    """A key names a file under the root: no empty, relative or hidden part (the store's
    own files, temporary files and blobs, start with a dot)."""
    parts = key.split("/")
    if not key or any(not part or part.startswith(".") for part in parts):
        raise ValueError(f"bad file key {key!r}")
    return key


class DirectoryFileStore:
    """Files under one directory; each write lands atomically (temp file, rename).

    Not fsynced, as SQLite's commits are not (``synchronous=NORMAL``): a write survives
    the process being killed; only a power cut can cost the last ones.

    Uploads are stored once per content. Test suites upload the same fixture photos
    with every tune they create, and writing the bytes was most of the cost of a
    create: each new page of the page cache costs kernel time (about 2.4 ms per four
    200 KB photos under sustained load, against about 0.1 ms to find and compare them).
    An upload's key is a hard link to its blob in ``.blobs``; the blob goes when its
    last key does.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self._hard_links = True
        """False once the file system has refused one: then each upload is a copy."""
        self._discard_stale()

    def put(self, key: str, data: bytes) -> None:
        target = self.root / _check_key(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        _write_atomically(target, data)

    def put_upload(self, key: str, data: bytes) -> None:
        target = self.root / _check_key(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        self._put_upload_at(target, data)

    def stage_uploads(self, files: list[tuple[str, bytes]]) -> str:
        staged = uuid.uuid4().hex
        folder = self.root / STAGING / staged
        folder.mkdir(parents=True)
        for name, data in files:
            self._put_upload_at(folder / _check_key(name), data)
        return staged

    def adopt(self, staged: str, prefix: str) -> None:
        source = self.root / STAGING / _check_key(staged)
        target = self.root / _check_key(prefix.rstrip("/"))
        try:
            os.rename(source, target)  # on the event loop, in a transaction: one call
        except FileNotFoundError:  # the first of its kind: no parent folder yet
            target.parent.mkdir(parents=True, exist_ok=True)
            os.rename(source, target)
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            self.delete_prefix(prefix)  # left by a transaction that never committed
            os.rename(source, target)

    def discard(self, staged: str) -> None:
        self._delete_folder(self.root / STAGING / _check_key(staged))

    def _discard_stale(self) -> None:
        """Staged uploads of a process that died before it adopted them."""
        limit = time.time() - STALE_STAGING_SECONDS
        for folder in (self.root / STAGING).glob("*"):
            with contextlib.suppress(OSError):  # another process got there first
                if folder.stat().st_mtime < limit:
                    self._delete_folder(folder)

    def _put_upload_at(self, target: Path, data: bytes) -> None:
        blob = self._blob(data)
        while self._hard_links:
            try:
                stored = blob.read_bytes()
            except FileNotFoundError:
                blob.parent.mkdir(parents=True, exist_ok=True)
                _write_atomically(blob, data)
            else:
                if stored != data:
                    break  # another photo of the same fingerprint: a copy of its own
            try:
                _link_atomically(blob, target)
                return
            except FileNotFoundError:
                continue  # the blob's last key was deleted meanwhile: write it again
            except OSError as exc:
                if exc.errno == errno.EMLINK:
                    break  # as many keys as the file system allows: a copy of its own
                self._hard_links = False
                blob.unlink(missing_ok=True)
        _write_atomically(target, data)

    def _blob(self, data: bytes) -> Path:
        """Where an upload's content is kept, named by ``_fingerprint``."""
        name = _fingerprint(data)
        return self.root / BLOBS / name[-2:] / name

    def get(self, key: str) -> bytes | None:
        try:
            return (self.root / _check_key(key)).read_bytes()
        except (FileNotFoundError, IsADirectoryError, ValueError):
            return None

    def delete_prefix(self, prefix: str) -> None:
        self._delete_folder(self.root / _check_key(prefix.rstrip("/")))

    def _delete_folder(self, folder: Path) -> None:
        if folder.is_dir():
            for path in sorted(folder.rglob("*"), reverse=True):
                if path.is_dir():
                    path.rmdir()
                else:
                    self._unlink(path)
            folder.rmdir()

    def _unlink(self, path: Path) -> None:
        """Delete a file; an upload's blob too, when this was its last key."""
        found = path.stat()
        if found.st_nlink == 1:
            path.unlink()
            return
        blob = self._blob(path.read_bytes())
        path.unlink()
        try:
            kept = blob.stat()
            if kept.st_ino == found.st_ino and kept.st_nlink == 1:
                blob.unlink()
        except FileNotFoundError:
            pass


FINGERPRINT_SLICES = 64


def _fingerprint(data: bytes) -> str:
    """The size and a CRC-32 of 64 slices of 16 bytes spread over the data: a name found
    in microseconds, where a checksum of a 200 KB photo took 40 µs. A reuse compares the
    bytes, so two uploads of one fingerprint share a name, never content (the second is
    a copy of its own)."""
    step = max(16, len(data) // FINGERPRINT_SLICES)
    sample = b"".join([data[start : start + 16] for start in range(0, len(data), step)])
    return f"{len(data):x}-{zlib.crc32(sample):08x}"


def _write_atomically(target: Path, data: bytes) -> None:
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _link_atomically(source: Path, target: Path) -> None:
    """Make ``target`` a hard link to ``source``, replacing whatever was there."""
    temp = target.parent / f".tmp-{os.getpid()}-{threading.get_ident()}-{target.name}"
    os.link(source, temp)
    try:
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


class MemoryFileStore:
    def __init__(self) -> None:
        self._files: dict[str, bytes] = {}
        self._staged: dict[str, dict[str, bytes]] = {}
        self._lock = threading.Lock()

    def put(self, key: str, data: bytes) -> None:
        with self._lock:
            self._files[_check_key(key)] = data

    def put_upload(self, key: str, data: bytes) -> None:
        self.put(key, data)  # held as given: equal uploads cost no copy to begin with

    def stage_uploads(self, files: list[tuple[str, bytes]]) -> str:
        staged = uuid.uuid4().hex
        with self._lock:
            self._staged[staged] = {_check_key(name): data for name, data in files}
        return staged

    def adopt(self, staged: str, prefix: str) -> None:
        self.delete_prefix(prefix)
        with self._lock:
            files = self._staged.pop(staged)
            for name, data in files.items():
                self._files[f"{prefix.rstrip('/')}/{name}"] = data

    def discard(self, staged: str) -> None:
        with self._lock:
            self._staged.pop(staged, None)

    def get(self, key: str) -> bytes | None:
        with self._lock:
            return self._files.get(key)

    def delete_prefix(self, prefix: str) -> None:
        start = prefix.rstrip("/") + "/"
        with self._lock:
            for key in [k for k in self._files if k.startswith(start)]:
                del self._files[key]
