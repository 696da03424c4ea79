"""Object store on a local folder: temp file in the same folder, fsync, rename.

A crash at any point leaves either no file or the whole file under the final name, never a
half file; leftover ``*.tmp`` files are ignored by :meth:`list` (a sweep, still to come, will
remove them).
"""

from __future__ import annotations

import contextlib
import errno
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from pacs.errors import ObjectNotFound, StorageFull, StorageUnavailable
from pacs.storage.keys import is_valid_key
from pacs.storage.objects import CHUNK_SIZE

TMP_SUFFIX = ".tmp"


class FilesystemObjectStore:
    """Objects as files under ``root``, one file per key."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"FilesystemObjectStore({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        # Keys are made by pacs.storage.keys only; refusing anything else means no caller can
        # ever turn received text into a path, even by mistake.
        if not is_valid_key(key):
            raise ValueError(f"refusing object key not made by the archive: {key!r}")
        return self.root / key

    def put(self, key: str, data: bytes | BinaryIO) -> None:
        """Write the object atomically and durably; a no-op if it already exists."""
        path = self._path(key)
        if path.exists():
            return  # content-addressed: the same key holds the same bytes
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}{TMP_SUFFIX}")
        try:
            new_dirs = self._make_parents(path)
            with open(tmp, "wb") as fh:
                if isinstance(data, bytes | bytearray | memoryview):
                    fh.write(data)
                else:
                    while chunk := data.read(CHUNK_SIZE):
                        fh.write(chunk)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
            # The rename, and each folder made for it, is durable once its parent is synced.
            _fsync_dir(path.parent)
            for folder in new_dirs:
                _fsync_dir(folder.parent)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageFull(f"no space left in {self.root}") from exc
            raise StorageUnavailable(f"cannot write object {key}: {exc.strerror}") from exc

    def _make_parents(self, path: Path) -> list[Path]:
        """Create the missing folders between the root and ``path``; return the new ones."""
        missing = []
        folder = path.parent
        while folder != self.root and not folder.is_dir():
            missing.append(folder)
            folder = folder.parent
        made = []
        for folder in reversed(missing):
            # Sync the parent even when another writer won the race to make the folder: its
            # sync may not have happened yet, and ours must not depend on it.
            with contextlib.suppress(FileExistsError):
                folder.mkdir()
            made.append(folder)
        return made

    def open(self, key: str) -> BinaryIO:
        """Open the object for reading."""
        try:
            return open(self._path(key), "rb")
        except FileNotFoundError:
            raise ObjectNotFound(key) from None
        except OSError as exc:
            raise StorageUnavailable(f"cannot read object {key}: {exc.strerror}") from exc

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        """Read ``length`` bytes from ``offset`` with one positioned read."""
        with self.open(key) as stream:
            try:
                return os.pread(stream.fileno(), length, offset)
            except OSError as exc:
                raise StorageUnavailable(f"cannot read object {key}: {exc.strerror}") from exc

    def exists(self, key: str) -> bool:
        """True if the object's file exists."""
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        """The object's size in bytes."""
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            raise ObjectNotFound(key) from None

    def delete(self, key: str) -> None:
        """Remove the object's file if it exists."""
        self._path(key).unlink(missing_ok=True)

    def list(self, prefix: str = "") -> Iterator[str]:
        """Yield keys under ``prefix`` (temp files of writes in progress are skipped)."""
        for dirpath, _dirs, files in os.walk(self.root):
            rel_dir = Path(dirpath).relative_to(self.root).as_posix()
            for name in files:
                if name.startswith(".") and name.endswith(TMP_SUFFIX):
                    continue
                key = name if rel_dir == "." else f"{rel_dir}/{name}"
                if key.startswith(prefix):
                    yield key


def _fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
